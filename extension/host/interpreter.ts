/**
 * Which Python runs the daemon, as VS Code tells it: the lmscope.python setting, the ms-python
 * extension's active interpreter and the workspace folder, handed to python.ts (which decides,
 * without vscode, and is tested); and the help shown when that Python lacks lmscope.
 */

import os from 'node:os';
import * as vscode from 'vscode';
import {resolveInterpreter, type Interpreter} from './python';

/** The interpreter the settings and the Python extension name for this workspace. */
export async function configuredInterpreter(): Promise<Interpreter> {
  const config = vscode.workspace.getConfiguration('lmscope');
  const folder = vscode.workspace.workspaceFolders?.[0];
  return resolveInterpreter({
    setting: config.get<string>('python'),
    pythonExtension: await pythonExtensionInterpreter(folder?.uri),
    platform: process.platform,
    workspaceFolder: folder?.uri.fsPath,
    home: os.homedir(),
  });
}

interface PythonExtensionApi {
  settings?: {getExecutionDetails?(resource?: vscode.Uri): {execCommand: string[] | undefined}};
  environments?: {getActiveEnvironmentPath?(resource?: vscode.Uri): {path: string}};
}

/** The ms-python extension's active interpreter, when that extension is installed. */
async function pythonExtensionInterpreter(resource: vscode.Uri | undefined): Promise<string[] | undefined> {
  const extension = vscode.extensions.getExtension<PythonExtensionApi>('ms-python.python');
  if (extension === undefined) return undefined;
  try {
    const api = extension.isActive ? extension.exports : await extension.activate();
    const command = api.settings?.getExecutionDetails?.(resource).execCommand;
    if (command !== undefined && command.length > 0) return command;
    const path = api.environments?.getActiveEnvironmentPath?.(resource).path;
    return path ? [path] : undefined;
  } catch {
    return undefined;
  }
}

export async function showInstallHelp(message: string, interpreter: Interpreter, context: vscode.ExtensionContext): Promise<void> {
  const pick = await vscode.window.showErrorMessage(`lmscope: ${message}`, 'How to Install', 'Set Interpreter', 'Show Log');
  if (pick === 'How to Install') {
    const pip = `"${interpreter.command}" -m pip install lmscope`;
    const readme = vscode.Uri.joinPath(context.extensionUri, 'README.md');
    const choice = await vscode.window.showInformationMessage(
      `Install the lmscope Python package into the interpreter the extension uses, e.g. ${pip} (from a checkout: \`make demo\` creates .venv with everything; then set lmscope.python to .venv/bin/python). Then run "lmscope: Restart Daemon".`,
      {modal: true},
      'Copy pip Command',
      'Open README',
    );
    if (choice === 'Copy pip Command') await vscode.env.clipboard.writeText(pip);
    else if (choice === 'Open README') await vscode.commands.executeCommand('markdown.showPreview', readme);
  } else if (pick === 'Set Interpreter') {
    await vscode.commands.executeCommand('workbench.action.openSettings', 'lmscope.python');
  } else if (pick === 'Show Log') {
    await vscode.commands.executeCommand('lmscope.showLog');
  }
}
