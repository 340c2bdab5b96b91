/**
 * Which Python runs the daemon, decided without `vscode` so it can be tested: the `lmscope.python`
 * setting wins, then the Python extension's active interpreter, then `python3` (`python` on
 * Windows). The host gathers the inputs; `probeLmscope` checks the choice before the daemon starts.
 */

import {execFile} from 'node:child_process';

export interface InterpreterSources {
  /** The `lmscope.python` setting (empty: unset). */
  readonly setting: string | undefined;
  /** The ms-python extension's active interpreter for the workspace, when that extension is present. */
  readonly pythonExtension: readonly string[] | undefined;
  readonly platform: NodeJS.Platform;
  /** Expands `${workspaceFolder}` and `~` in the setting. */
  readonly workspaceFolder?: string | undefined;
  readonly home?: string | undefined;
}

export interface Interpreter {
  /** The executable and any arguments before `-m lmscope` (the Python extension may give several). */
  readonly command: string;
  readonly args: readonly string[];
  readonly source: 'setting' | 'python-extension' | 'default';
}

export function resolveInterpreter(sources: InterpreterSources): Interpreter {
  const setting = sources.setting?.trim();
  if (setting) {
    let command = setting;
    if (sources.workspaceFolder !== undefined) command = command.replace(/\$\{workspaceFolder\}/g, sources.workspaceFolder);
    if (sources.home !== undefined && (command === '~' || command.startsWith('~/'))) command = sources.home + command.slice(1);
    return {command, args: [], source: 'setting'};
  }
  const fromExtension = sources.pythonExtension?.filter((part) => part.length > 0);
  if (fromExtension !== undefined && fromExtension.length > 0) {
    return {command: fromExtension[0]!, args: fromExtension.slice(1), source: 'python-extension'};
  }
  return {command: sources.platform === 'win32' ? 'python' : 'python3', args: [], source: 'default'};
}

/** The daemon's command line (vscode-languageclient appends `--stdio`). */
export function daemonArgs(interpreter: Interpreter): string[] {
  return [...interpreter.args, '-m', 'lmscope', 'serve'];
}

/** The probe run before starting: exits 0 when lmscope imports, prints its version. */
export function probeArgs(interpreter: Interpreter): string[] {
  return [...interpreter.args, '-c', 'import lmscope, sys; sys.stdout.write(lmscope.__version__)'];
}

/** Restart delays after crashes: 1 s, 2 s, 4 s, ... capped at 30 s; `null` after `maxRestarts`
 * crashes within the window (then the user restarts by hand). */
export function restartDelay(recentCrashes: number, maxRestarts = 5): number | null {
  if (recentCrashes > maxRestarts) return null;
  return Math.min(30_000, 1000 * 2 ** Math.max(0, recentCrashes - 1));
}

/** Whether `interpreter` can import lmscope, with a message a user can act on when not. */
export type Probe = {ok: true; version: string} | {ok: false; message: string; detail: string};

export function probeLmscope(interpreter: Interpreter, timeoutMs = 60_000): Promise<Probe> {
  return new Promise((resolve) => {
    execFile(interpreter.command, probeArgs(interpreter), {timeout: timeoutMs, windowsHide: true}, (error, stdout, stderr) => {
      if (error === null) {
        resolve({ok: true, version: stdout.trim()});
        return;
      }
      const code = (error as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') {
        resolve({
          ok: false,
          message: `Python interpreter "${interpreter.command}" was not found. Set lmscope.python to a Python with lmscope installed.`,
          detail: `spawn ${interpreter.command}: ENOENT`,
        });
        return;
      }
      const lastLine = stderr.trim().split('\n').pop() ?? '';
      resolve({
        ok: false,
        message: /No module named|ModuleNotFoundError/.test(stderr)
          ? `"${interpreter.command}" does not have the lmscope package installed.`
          : `"${interpreter.command}" could not import lmscope: ${lastLine || error.message}`,
        detail: `probe failed: ${error.message}\n${stderr}`,
      });
    });
  });
}
