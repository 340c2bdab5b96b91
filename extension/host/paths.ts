/**
 * Where Trace Selection saves a trace: `<folder of the traced file>/<tracesFolder>/<name>.lmtrace`,
 * and what the file is called. Pure string logic (no `vscode`): the host passes the file's path,
 * the setting, the prompt and the loaded model's name.
 *
 * The name is `<prompt slug>-<key>.<model tag>.lmtrace`, e.g.
 * `when-mary-and-john--a-drink-to-d3c0.smollm2-135m.lmtrace`:
 * - the slug (at most 32 characters) is what a person reads: the prompt's first words and, for a
 *   long prompt, its last words after `--` (prompts that share a start usually differ at the end);
 * - the key is 4 hex digits of a hash of the exact prompt and the model's full name, right after
 *   the slug, so two prompts with the same slug (the same words in another case or punctuation,
 *   or a different middle) differ early in the name, where the Explorer does not cut it;
 * - the model tag (at most 16 characters) says which model made it.
 * Tracing the same prompt with the same model again gives the same name, so the new trace
 * replaces the old one (the daemon writes atomically; an open graph of it reloads). Any other
 * prompt or model gives another name.
 */

import {createHash} from 'node:crypto';
import path from 'node:path';

/** The longest prompt slug; with the key, the start of a name that fits a narrow Explorer. */
export const MAX_SLUG = 32;
/** The longest model tag. */
export const MAX_MODEL_TAG = 16;
/** How the daemon names a base with an adapter merged in (`lmscope.models.loading`). */
const ADAPTER_JOIN = ' + ';
/** The most of a model tag the adapter's part takes. */
const MAX_ADAPTER_TAG = 7;
/** Where a long prompt's slug joins its first words to its last ones. */
const ELISION = '--';

/** Lower-case ASCII words of `text` (accents dropped, anything else a separator). */
function words(text: string): string[] {
  const ascii = text.normalize('NFKD').replace(/[\u0300-\u036f]/g, '');
  return ascii
    .toLowerCase()
    .split(/[^a-z0-9]+/)
    .filter((w) => w.length > 0);
}

/** `list` joined with dashes, cut to `max` characters at a dash where that keeps most of it. */
function cutWords(list: readonly string[], max: number): string {
  const joined = list.join('-');
  if (joined.length <= max) return joined;
  const cut = joined.lastIndexOf('-', max);
  return (cut > max / 2 ? joined.slice(0, cut) : joined.slice(0, max)).replace(/-+$/, '');
}

/**
 * A file-name-safe slug of a prompt: lower-case ASCII letters, digits and single dashes, at most
 * `max` characters. A prompt too long for it keeps its first words and its last words, joined by
 * `--` ("when-mary-and-john--gave-a-drink-to"); "trace" when nothing is left.
 */
export function slugify(prompt: string, max: number = MAX_SLUG): string {
  const all = words(prompt);
  const whole = all.join('-');
  if (whole.length <= max) return whole || 'trace';
  // The end gets about 40% of the room: enough for the last few words, where variants differ.
  const tailRoom = Math.floor((max - ELISION.length) * 0.4);
  const tail: string[] = [];
  let used = 0;
  for (let i = all.length - 1; i > 0; i--) {
    const w = all[i]!;
    const next = used + w.length + (tail.length > 0 ? 1 : 0);
    if (next > tailRoom) break;
    tail.unshift(w);
    used = next;
  }
  if (tail.length === 0) return cutWords(all, max);
  const head = cutWords(all.slice(0, all.length - tail.length), max - ELISION.length - used);
  return head ? `${head}${ELISION}${tail.join('-')}` : cutWords(all, max);
}

/** A short tag of a model's name for file names ("SmolLM2-135M-Instruct" -> "smollm2-135m",
 * "Qwen/Qwen2.5-0.5B" -> "qwen2-5-0-5b": no hub owner or folder); "model" when the name has no
 * letters or digits. A base with a merged adapter, named "base + adapter" by the daemon, is
 * tagged "base+adapter" ("smollm2+poems"): never a base model's tag, so its traces never
 * replace the base's. */
export function modelTag(modelName: string): string {
  const joined = modelName.lastIndexOf(ADAPTER_JOIN);
  if (joined < 0) return cutWords(words(lastPart(modelName)), MAX_MODEL_TAG) || 'model';
  const adapter = cutWords(words(lastPart(modelName.slice(joined + ADAPTER_JOIN.length))), MAX_ADAPTER_TAG) || 'adapter';
  const base = cutWords(words(lastPart(modelName.slice(0, joined))), MAX_MODEL_TAG - 1 - adapter.length) || 'model';
  return `${base}+${adapter}`;
}

/** The last part of a path or hub id that has letters or digits. */
function lastPart(name: string): string {
  return name.split(/[\\/]/).filter((part) => words(part).length > 0).pop() ?? '';
}

/** 4 hex digits naming the pair (exact prompt, exact model name). */
export function traceKey(prompt: string, modelName: string): string {
  return createHash('sha256').update(modelName).update('\0').update(prompt).digest('hex').slice(0, 4);
}

/** The file name of the trace of `prompt` made by the model called `modelName`. */
export function traceFileName(prompt: string, modelName: string): string {
  return `${slugify(prompt)}-${traceKey(prompt, modelName)}.${modelTag(modelName)}.lmtrace`;
}

/** The folder traces of `sourceFile` go to: `tracesFolder` relative to the file's folder, or
 * itself when absolute. `null` when the source has no folder on disk (an untitled editor) and the
 * setting is relative: the caller then asks or uses the workspace folder.
 *
 * A relative setting stays inside the file's folder: one that climbs out of it (`../../x`, as a
 * workspace's settings file could say) throws, so a workspace cannot make Trace Selection write
 * next to files elsewhere. An absolute setting is an explicit choice and is used as given. */
export function tracesDir(sourceFile: string | null, tracesFolder: string, pathApi: path.PlatformPath = path): string | null {
  const folder = tracesFolder.trim() || 'traces';
  if (pathApi.isAbsolute(folder)) return pathApi.normalize(folder);
  if (escapes(folder, pathApi)) {
    throw new Error(`lmscope.tracesFolder "${folder}" leads outside the traced file's folder; use a folder inside it or an absolute path`);
  }
  if (sourceFile === null) return null;
  return pathApi.join(pathApi.dirname(sourceFile), folder);
}

/** Whether a relative path climbs above where it starts (`..`, `a/../..`). */
function escapes(relative: string, pathApi: path.PlatformPath): boolean {
  const normal = pathApi.normalize(relative);
  return normal === '..' || normal.startsWith(`..${pathApi.sep}`) || normal.startsWith('../');
}

/**
 * The absolute path to save the trace of `prompt` by `modelName` to, in `dir`: the same path for
 * the same prompt and model (a new trace replaces the old), another one for anything else.
 */
export function tracePath(dir: string, prompt: string, modelName: string, pathApi: path.PlatformPath = path): string {
  const candidate = pathApi.join(dir, traceFileName(prompt, modelName));
  // The name holds no separators or dots to climb with; checked anyway, at the last step.
  if (pathApi.dirname(candidate) !== pathApi.normalize(dir).replace(/[\\/]+$/, '')) {
    throw new Error(`refusing to save a trace outside ${dir}: ${candidate}`);
  }
  return candidate;
}
