// ESLint for the TypeScript of the extension (host, webview, tests): flat config,
// typescript-eslint with type information (each file's nearest tsconfig.json). `make lint` runs it.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  {
    // Generated (protocol/generate-ts.mjs), build outputs, and other folders' JavaScript.
    ignores: ['extension/src/protocol/types.ts', 'extension/out/**', 'dist/**', 'node_modules/**', 'tools/**', '**/*.js', '**/*.mjs', '**/*.cjs'],
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
