#!/usr/bin/env node
// Generates extension/shared/protocol/types.ts from protocol/ (the JSON Schemas and methods.json)
// and extension/shared/protocol/vocabulary.ts from protocol/vocabulary.json (names, colours and
// token display rules of every view).
//
//   node protocol/generate-ts.mjs           write the files
//   node protocol/generate-ts.mjs --check   regenerate in memory; exit 1 if a file differs
//
// How: every named schema (each file in protocol/schemas/ and each `$defs` entry) is compiled
// on its own by json-schema-to-typescript, in a fixed order, and the pieces are concatenated.
// Before compiling, each `$ref` is resolved here, from the files on disk, to the `title` of the
// schema it points at and replaced by `tsType: "<Title>"`. The compiler therefore never follows
// a `$ref` (no file or network access of its own) and declares each shared type exactly once:
// left to itself it re-declares a referenced type for every `$ref` with a sibling
// `description` (`Handle1`, `Handle2`, ...), and those descriptions are the doc comments we want.
// Keywords that only validate (if/then/else, dependentRequired, constraint-only oneOf) are
// dropped; the schema stays the authority, the types are its shape.
//
// The schemas' defaults follow, as values: DEFAULTS (every common `$defs` entry with a
// `default`, as lmscope.protocol.defaults.shared_default reads them) and PARAM_DEFAULTS (per
// request, its optional params' defaults, following `$ref`s, as param_defaults does), each
// type-checked against the generated types with `satisfies`.

import {readFileSync, readdirSync, writeFileSync, mkdirSync, existsSync} from 'node:fs';
import path from 'node:path';
import {fileURLToPath} from 'node:url';
import {compile} from 'json-schema-to-typescript';

const PROTOCOL_DIR = path.dirname(fileURLToPath(import.meta.url));
const REPO_ROOT = path.dirname(PROTOCOL_DIR);
const SCHEMAS_DIR = path.join(PROTOCOL_DIR, 'schemas');
const OUT_FILE = path.join(REPO_ROOT, 'extension', 'shared', 'protocol', 'types.ts');
const VOCABULARY_FILE = path.join(PROTOCOL_DIR, 'vocabulary.json');
const VOCABULARY_OUT = path.join(REPO_ROOT, 'extension', 'shared', 'protocol', 'vocabulary.ts');
const METHOD_PREFIX = 'lmscope/';

const HEADER = `// generated from protocol/ by protocol/generate-ts.mjs — do not edit.
// Change the JSON Schemas or protocol/methods.json, then run \`npm run generate:protocol\`.
`;

// Keywords that constrain values but add nothing to a TypeScript shape (or confuse the compiler).
const VALIDATION_ONLY = new Set(['if', 'then', 'else', 'dependentRequired', 'dependentSchemas', 'not']);

function fail(message) {
  console.error(`generate-ts: ${message}`);
  process.exit(1);
}

function readJson(file) {
  return JSON.parse(readFileSync(file, 'utf8'));
}

/** Every schema file, by file name (sorted, so nothing depends on directory order). */
function loadSchemas() {
  const schemas = new Map();
  for (const name of readdirSync(SCHEMAS_DIR).sort()) {
    if (name.endsWith('.schema.json')) schemas.set(name, readJson(path.join(SCHEMAS_DIR, name)));
  }
  return schemas;
}

/** The schema a `$ref` (relative to `baseFile`) points at, read from the loaded files. */
function resolveRef(schemas, ref, baseFile) {
  const [file, fragment = ''] = ref.split('#');
  const fileName = file === '' ? baseFile : file;
  let target = schemas.get(fileName);
  if (target === undefined) fail(`${baseFile}: $ref ${ref} names a file that is not in protocol/schemas/`);
  for (const token of fragment.split('/').filter(t => t !== '')) {
    const key = decodeURIComponent(token).replace(/~1/g, '/').replace(/~0/g, '~');
    target = target?.[key];
    if (target === undefined) fail(`${baseFile}: $ref ${ref} points at nothing`);
  }
  if (typeof target.title !== 'string') fail(`${baseFile}: $ref ${ref} points at a schema without a title`);
  return target;
}

/** Is `schema` only a constraint (e.g. `{"required": ["prompt"]}`), with no shape of its own? */
function isConstraintOnly(schema) {
  return Object.keys(schema).every(k => ['required', 'description', '$comment'].includes(k));
}

/**
 * A copy of `schema` that the compiler can take alone: `$ref`s become named `tsType`s, and a
 * titled schema nested inside (e.g. `RouteEdge` in `RouteResult`) is moved to `hoisted` and
 * named the same way, so the property keeps its own doc comment and default.
 */
function prepare(schemas, schema, baseFile, hoisted, nested = false) {
  if (Array.isArray(schema)) return schema.map(s => prepare(schemas, s, baseFile, hoisted, true));
  if (schema === null || typeof schema !== 'object') return schema;
  const withDefault = description =>
    'default' in schema ? `${description}\n\n@default ${JSON.stringify(schema.default)}` : description;
  if (nested && typeof schema.title === 'string' && !('$ref' in schema)) {
    const {description, default: _default, ...declared} = schema;
    hoisted.push({...declared, description});
    return {description: withDefault(description), tsType: schema.title};
  }
  const out = {};
  for (const [key, value] of Object.entries(schema)) {
    if (['$schema', '$id', '$defs', '$comment', ...VALIDATION_ONLY].includes(key)) continue;
    if (key === '$ref') out.tsType = resolveRef(schemas, value, baseFile).title;
    else if ((key === 'oneOf' || key === 'anyOf') && value.every(isConstraintOnly)) continue;
    else if (key === 'properties' || key === 'patternProperties') {
      // Property names are data, not keywords: never filter them.
      out[key] = Object.fromEntries(
        Object.entries(value).map(([k, v]) => [k, prepare(schemas, v, baseFile, hoisted, true)]),
      );
    } else out[key] = prepare(schemas, value, baseFile, hoisted, true);
  }
  if (typeof out.description === 'string') out.description = withDefault(out.description);
  // A closed object without properties (StatusParams) is `{}` in the compiler's output, which
  // TypeScript reads as "any non-null value"; say "no keys" instead.
  if (out.type === 'object' && out.additionalProperties === false && Object.keys(out.properties ?? {}).length === 0) {
    out.tsType = 'Record<string, never>';
  }
  return out;
}

const COMPILE_OPTIONS = {
  bannerComment: '',
  additionalProperties: false,
  declareExternallyReferenced: true,
  unreachableDefinitions: false,
  enableConstEnums: false,
  format: true,
  unknownAny: true,
  strictIndexSignatures: true,
  // No $ref reaches the compiler (see prepare); refuse any resolution that would read a file.
  $refOptions: {resolve: {external: false}},
};

/** The declarations of one named schema (and of the titled schemas nested in it), in order. */
async function compileNamed(schemas, schema, baseFile, seen) {
  const pieces = [];
  const queue = [schema];
  while (queue.length > 0) {
    const next = queue.shift();
    const title = next.title;
    if (typeof title !== 'string' || !/^[A-Z][A-Za-z0-9]*$/.test(title)) {
      fail(`${baseFile}: every schema needs a PascalCase title (the TypeScript name), got ${JSON.stringify(title)}`);
    }
    if (seen.has(title)) fail(`${baseFile}: ${title} is declared twice (titles must be unique)`);
    seen.add(title);
    const hoisted = [];
    pieces.push((await compile(prepare(schemas, next, baseFile, hoisted), title, COMPILE_OPTIONS)).trim());
    queue.push(...hoisted);
  }
  return pieces.join('\n\n');
}

/** Every default of a shared definition, by its name (Python's `shared_default`). */
function sharedDefaults(common) {
  return Object.entries(common.$defs).filter(([, def]) => 'default' in def);
}

/**
 * The defaults of a request's optional top-level params, as Python's `param_defaults`: a
 * `default` beside the param wins, else the default of the definition its `$ref` names;
 * required params have none.
 */
function paramDefaults(schemas, file) {
  const schema = schemas.get(file);
  const required = new Set(schema.required ?? []);
  const found = [];
  for (const [name, prop] of Object.entries(schema.properties ?? {})) {
    if (required.has(name)) continue;
    if ('default' in prop) found.push([name, prop.default]);
    else if ('$ref' in prop) {
      const target = resolveRef(schemas, prop.$ref, file);
      if ('default' in target) found.push([name, target.default]);
    }
  }
  return found;
}

/** An object key as TypeScript writes it: bare when it is an identifier, else quoted. */
const tsKey = key => (/^[A-Za-z_$][\w$]*$/.test(key) ? key : JSON.stringify(key));
/** `{a: 1, b: "x"}` from [key, value] pairs (values are JSON). */
const tsObject = pairs => `{${pairs.map(([k, v]) => `${tsKey(k)}: ${JSON.stringify(v)}`).join(', ')}}`;

function methodKey(name) {
  if (!name.startsWith(METHOD_PREFIX)) fail(`methods.json: ${name} does not start with ${METHOD_PREFIX}`);
  return name.slice(METHOD_PREFIX.length);
}

async function generate() {
  const table = readJson(path.join(PROTOCOL_DIR, 'methods.json'));
  const schemas = loadSchemas();
  const seen = new Set();
  const pieces = [];

  // Shared definitions first, in the order common.schema.json lists them.
  const common = schemas.get('common.schema.json');
  for (const def of Object.values(common.$defs)) {
    pieces.push(await compileNamed(schemas, def, 'common.schema.json', seen));
  }

  // Then each method's params and result, in table order, then initializationOptions.
  const files = [];
  for (const method of table.methods) files.push(method.params, ...(method.result ? [method.result] : []));
  files.push(table.initializationOptions);
  const unlisted = [...schemas.keys()].filter(f => f !== 'common.schema.json' && !files.includes(f));
  if (unlisted.length > 0) fail(`schemas not named in methods.json: ${unlisted.join(', ')}`);
  for (const file of files) {
    const schema = schemas.get(file);
    if (schema === undefined) fail(`methods.json names ${file}, which is not in protocol/schemas/`);
    if (schema.$defs !== undefined) fail(`${file}: put shared definitions in common.schema.json`);
    pieces.push(await compileNamed(schemas, schema, file, seen));
  }

  const title = file => schemas.get(file).title;
  const requests = table.methods.filter(m => m.kind === 'request');
  const notifications = table.methods.filter(m => m.kind === 'notification');
  const lines = [
    `/** The lmscope protocol version; exchanged at initialize, a mismatch is refused. */`,
    `export const PROTOCOL_VERSION = ${JSON.stringify(table.protocolVersion)};`,
    '',
    `/** Every lmscope method name (requests and notifications), keyed by its name without the prefix. */`,
    `export const Methods = {`,
    ...table.methods.map(m => `  ${methodKey(m.name)}: ${JSON.stringify(m.name)},`),
    `} as const;`,
    '',
    `/** Params and result of every request (client -> server), keyed by method name. */`,
    `export interface RequestTypes {`,
    ...requests.map(m => `  ${JSON.stringify(m.name)}: {params: ${title(m.params)}; result: ${title(m.result)}};`),
    `}`,
    '',
    `/** Params of every notification (server -> client), keyed by method name. */`,
    `export interface NotificationTypes {`,
    ...notifications.map(m => `  ${JSON.stringify(m.name)}: ${title(m.params)};`),
    `}`,
    '',
    `/** JSON-RPC error codes the daemon answers with. */`,
    `export const ErrorCodes = {`,
    ...table.errors.map(e => `  ${e.name}: ${e.code},`),
    `} as const;`,
    '',
    `/**`,
    ` * The default of every shared definition that has one (common.schema.json \`$defs\`), by name:`,
    ` * the value used when nobody chose one. Read defaults here, never write them again.`,
    ` */`,
    `export const DEFAULTS = {`,
    ...sharedDefaults(common).map(([name, def]) => `  ${tsKey(name)}: ${JSON.stringify(def.default)},`),
    `} as const satisfies {`,
    ...sharedDefaults(common).map(([name, def]) => `  ${tsKey(name)}: ${def.title};`),
    `};`,
    '',
    `/**`,
    ` * Per request, the defaults of its optional params: the daemon fills in exactly these when a`,
    ` * param is left out (a param's own \`default\`, else that of the definition it \`$ref\`s).`,
    ` */`,
    `export const PARAM_DEFAULTS = {`,
    ...requests.map(m => `  ${JSON.stringify(m.name)}: ${tsObject(paramDefaults(schemas, m.params))},`),
    `} as const satisfies {[M in keyof RequestTypes]: Partial<RequestTypes[M]['params']>};`,
  ];
  return `${HEADER}\n${pieces.join('\n\n')}\n\n${lines.join('\n')}\n`;
}

/** Without its `$schema` and `$comment` keys, at every level (they document the file only). */
function withoutComments(value) {
  if (Array.isArray(value)) return value.map(withoutComments);
  if (value === null || typeof value !== 'object') return value;
  return Object.fromEntries(
    Object.entries(value)
      .filter(([key]) => key !== '$schema' && key !== '$comment')
      .map(([key, v]) => [key, withoutComments(v)]),
  );
}

/** extension/shared/protocol/vocabulary.ts: protocol/vocabulary.json as a typed constant. */
function generateVocabulary() {
  const raw = readJson(VOCABULARY_FILE);
  const common = readJson(path.join(SCHEMAS_DIR, 'common.schema.json'));
  const nodeKinds = common.$defs.NodeKind.enum;
  const edgeKinds = common.$defs.EdgeKind.enum;
  const missing = [
    ...nodeKinds.filter(k => !(k in raw.nodes)).map(k => `nodes.${k}`),
    ...edgeKinds.filter(k => !(k in raw.edges)).map(k => `edges.${k}`),
  ];
  if (missing.length > 0) fail(`vocabulary.json lacks ${missing.join(', ')}`);
  for (const [where, entry] of [...Object.entries(raw.nodes), ...Object.entries(raw.edges), ['output', raw.output]]) {
    if (!(entry.colour in raw.colours)) fail(`vocabulary.json: ${where} names colour ${entry.colour}, which \`colours\` lacks`);
  }
  const data = withoutComments(raw);
  const comment = text => ` * ${text.replace(/\*\//g, '*\\/')}`;
  const lines = [
    `// generated from protocol/vocabulary.json by protocol/generate-ts.mjs — do not edit.`,
    `// Change protocol/vocabulary.json, then run \`npm run generate:protocol\`.`,
    `import type {EdgeKind, NodeKind} from './types';`,
    '',
    `/** A named colour: the fixed hex (SVG and PNG exports; the fallback) and the VS Code theme variable. */`,
    `export interface VocabularyColour {`,
    `  readonly hex: string;`,
    `  readonly themeVar: string;`,
    `  readonly use: string;`,
    `}`,
    '',
    `export type ColourName = ${Object.keys(raw.colours).map(k => JSON.stringify(k)).join(' | ')};`,
    '',
    `/** What a node kind is called and how it is drawn. */`,
    `export interface NodeVocabulary {`,
    `  /** The label's letter: X3, A23.14, M29.14, R22.2. */`,
    `  readonly letter: string;`,
    `  readonly name: string;`,
    `  /** One line saying what the node is. */`,
    `  readonly legend: string;`,
    `  readonly colour: ColourName;`,
    `  readonly shape: 'circle' | 'square';`,
    `}`,
    '',
    `/** What an edge kind is called and how it is drawn. */`,
    `export interface EdgeVocabulary {`,
    `  readonly name: string;`,
    `  readonly legend: string;`,
    `  readonly colour: ColourName;`,
    `  /** SVG stroke-dasharray; null: solid. */`,
    `  readonly dash: string | null;`,
    `}`,
    '',
    `/**`,
    comment(raw.$comment),
    ` */`,
    `export const VOCABULARY = ${JSON.stringify(data, null, 2)} as const satisfies {`,
    `  readonly nodes: {readonly [K in NodeKind]: NodeVocabulary};`,
    `  readonly output: {readonly name: string; readonly legend: string; readonly colour: ColourName};`,
    `  readonly embeddingRow: string;`,
    `  readonly layerRow: string;`,
    `  readonly edges: {readonly [K in EdgeKind]: EdgeVocabulary};`,
    `  readonly sizes: {readonly legend: string; readonly base: number; readonly minRadius: number; readonly opacityBase: number};`,
    `  readonly colours: {readonly [name: string]: VocabularyColour};`,
    `  readonly tokens: {`,
    `    readonly visible: {readonly [character: string]: string};`,
    `    readonly empty: string;`,
    `    readonly ellipsis: string;`,
    `    readonly control: readonly string[];`,
    `    readonly invisible: readonly string[];`,
    `    readonly invisibleCodePoints: readonly number[];`,
    `    readonly bytesOpen: string;`,
    `    readonly bytesClose: string;`,
    `    readonly bytesSeparator: string;`,
    `    readonly hints: {readonly bytePiece: string; readonly maybeBytePiece: string; readonly empty: string; readonly escaped: string};`,
    `  };`,
    `};`,
    '',
    `/** Per node kind: letter, name, legend, colour, shape. */`,
    `export const NODE_VOCABULARY: {readonly [K in NodeKind]: NodeVocabulary} = VOCABULARY.nodes;`,
    `/** Per edge kind: name, legend, colour, dash. */`,
    `export const EDGE_VOCABULARY: {readonly [K in EdgeKind]: EdgeVocabulary} = VOCABULARY.edges;`,
    `/** The output node's name, legend and colour (it is drawn largest, ringed in that colour). */`,
    `export const OUTPUT_NODE = VOCABULARY.output;`,
    `/** Named colours (hex and theme variable). */`,
    `export const COLOURS: {readonly [K in ColourName]: VocabularyColour} = VOCABULARY.colours;`,
    `/** The embeddings' row label, and the prefix of a layer's (L0, L1, ...). */`,
    `export const EMBEDDING_ROW = VOCABULARY.embeddingRow;`,
    `export const LAYER_ROW = VOCABULARY.layerRow;`,
    `/** How a node's radius and fill follow its share of the prediction. */`,
    `export const NODE_SIZES = VOCABULARY.sizes;`,
    `/** The token display rules (extension/shared/display.ts applies them). */`,
    `export const TOKEN_DISPLAY = VOCABULARY.tokens;`,
  ];
  return `${lines.join('\n')}\n`;
}

const check = process.argv.includes('--check');
const outputs = [
  [OUT_FILE, await generate()],
  [VOCABULARY_OUT, generateVocabulary()],
];
let stale = false;
for (const [file, text] of outputs) {
  const relative = path.relative(REPO_ROOT, file);
  if (check) {
    const current = existsSync(file) ? readFileSync(file, 'utf8') : null;
    if (current !== text) {
      console.error(
        `${relative} is ${current === null ? 'missing' : 'out of date with protocol/'}: ` +
          'run `npm run generate:protocol` and commit the result.',
      );
      stale = true;
    } else console.log(`${relative} is up to date.`);
  } else {
    mkdirSync(path.dirname(file), {recursive: true});
    writeFileSync(file, text);
    console.log(`wrote ${relative}`);
  }
}
if (stale) process.exit(1);
