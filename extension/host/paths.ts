/**
 * Where Trace Selection saves a trace: `<folder of the traced file>/<tracesFolder>/<slug>.lmtrace`.
 * Pure string logic (no `vscode`): the host passes the file's path and the setting.
 */

import path from 'node:path';

const MAX_SLUG = 48;

/**
 * A file-name-safe slug of a prompt: lower-case ASCII letters, digits and single dashes, at most
 * 48 characters, cut at a word boundary where possible; "trace" when nothing is left.
 */
export function slugify(prompt: string): string {
  const ascii = prompt.normalize('NFKD').replace(/[\u0300-\u036f]/g, '');
  let slug = ascii
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '-')
    .replace(/^-+|-+$/g, '');
  if (slug.length > MAX_SLUG) {
    const cut = slug.lastIndexOf('-', MAX_SLUG);
    slug = slug.slice(0, cut > MAX_SLUG / 2 ? cut : MAX_SLUG).replace(/-+$/, '');
  }
  return slug || 'trace';
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
 * The absolute path to save a trace of `prompt` from `sourceFile` to; `exists` says whether a
 * path is taken, so an earlier trace is never overwritten (`-2`, `-3`, ... are appended).
 */
export function tracePath(
  dir: string,
  prompt: string,
  exists: (candidate: string) => boolean,
  pathApi: path.PlatformPath = path,
): string {
  const slug = slugify(prompt);
  for (let n = 1; ; n++) {
    const candidate = pathApi.join(dir, `${slug}${n === 1 ? '' : `-${n}`}.lmtrace`);
    // slugify leaves no separators or dots to climb with; checked anyway, at the last step.
    if (pathApi.dirname(candidate) !== pathApi.normalize(dir).replace(/[\\/]+$/, '')) {
      throw new Error(`refusing to save a trace outside ${dir}: ${candidate}`);
    }
    if (!exists(candidate)) return candidate;
  }
}
