// ESLint for the TypeScript of the extension (host, webview, shared, tests): flat config,
// typescript-eslint with type information (each file's nearest tsconfig.json). `make lint` runs it.
//
// The three runtimes are kept apart here (and by each folder's tsconfig.json libraries):
//   extension/shared/   runs in both: imports no vscode, no Node module, no host or webview file
//   extension/webview/  the browser sandbox: imports only its own files and ../shared
//   extension/host/     the extension host: never imports the webview's code
import {builtinModules} from 'node:module';
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

// Node's own modules, with and without the `node:` prefix (`fs`, `node:fs`, `fs/promises`, ...).
const NODE_MODULES = {
  group: ['node:*', ...builtinModules.flatMap((name) => [name, `${name}/*`])],
  message: 'Node modules exist in the extension host only: keep this code runtime-neutral (or move it to extension/host).',
};
const VSCODE = {
  group: ['vscode', 'vscode-languageclient', 'vscode-languageclient/*', 'vscode-languageserver-protocol', 'vscode-languageserver-protocol/*'],
  message: 'The vscode API and the language client exist in the extension host only.',
};
/** A relative import that reaches into one of `folders` (a path segment of that name). */
const into = (folders, message) => ({regex: `^\\.{1,2}/(.*/)?(${folders.join('|')})(/|$)`, message});

export default tseslint.config(
  {
    // Generated (protocol/generate-ts.mjs), build outputs, and other folders' JavaScript.
    ignores: ['extension/shared/protocol/types.ts', 'extension/out/**', 'dist/**', 'node_modules/**', 'tools/**', '**/*.js', '**/*.mjs', '**/*.cjs'],
  },
  {
    files: ['extension/**/*.ts'],
    extends: [js.configs.recommended, ...tseslint.configs.recommendedTypeChecked],
    languageOptions: {
      parserOptions: {projectService: true, tsconfigRootDir: import.meta.dirname},
    },
    linterOptions: {reportUnusedDisableDirectives: 'error'},
    rules: {
      // The host logs through its one LogOutputChannel; the webview reports to the host.
      'no-console': 'error',
      eqeqeq: ['error', 'always'],
      // node:test's test() returns a promise the runner awaits itself.
      '@typescript-eslint/no-floating-promises': ['error', {allowForKnownSafeCalls: [{from: 'package', package: 'node:test', name: ['test', 'describe', 'it', 'suite']}]}],
      '@typescript-eslint/consistent-type-imports': ['error', {fixStyle: 'inline-type-imports'}],
      '@typescript-eslint/no-unused-vars': ['error', {argsIgnorePattern: '^_'}],
    },
  },
  {
    files: ['extension/shared/**/*.ts'],
    rules: {
      'no-restricted-imports': ['error', {
        patterns: [
          NODE_MODULES,
          VSCODE,
          into(['host', 'webview', 'test'], 'extension/shared runs in the host and in the webview: it imports neither (nor the tests).'),
        ],
      }],
    },
  },
  {
    files: ['extension/webview/**/*.ts'],
    rules: {
      'no-restricted-imports': ['error', {
        patterns: [
          // Its own files (./x) and ../shared only: no Node module, no vscode API, no package
          // of its own (a package reaches it through extension/shared) but the browser-only
          // ones named here (d3-zoom and its d3-selection: zoom and pan of the graph).
          {regex: '^\\.\\./(?!shared/)', message: 'The webview imports only its own files and ../shared.'},
          {regex: '^(?!(d3-zoom|d3-selection)$)[^.]', message: 'The webview imports only its own files, ../shared and the browser packages eslint.config.mjs names: no Node module or vscode API (the host has them).'},
        ],
      }],
    },
  },
  {
    files: ['extension/host/**/*.ts'],
    rules: {
      'no-restricted-imports': ['error', {
        patterns: [into(['webview', 'test'], 'The host never imports the webview (it runs in another process) or the tests.')],
      }],
    },
  },
  {
    // Tests read parsed JSON and Python's answers: `any` there is checked by the assertions.
    files: ['extension/test/**/*.ts'],
    rules: {
      '@typescript-eslint/no-unsafe-assignment': 'off',
      '@typescript-eslint/no-unsafe-member-access': 'off',
      '@typescript-eslint/no-unsafe-argument': 'off',
      '@typescript-eslint/no-unsafe-call': 'off',
      '@typescript-eslint/no-unsafe-return': 'off',
    },
  },
);
