// Lint rules. The important one: src/core is pure (ARCHITECTURE.md rule 1) — no I/O modules,
// no clocks, no timers, no randomness, no process. Time and randomness come in as arguments.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

const ioModules = [
  'fs', 'fs/promises', 'net', 'tls', 'http', 'https', 'http2', 'dgram', 'dns', 'child_process',
  'worker_threads', 'cluster', 'os', 'timers', 'timers/promises', 'process', 'readline', 'stream',
  'crypto', 'perf_hooks', 'v8', 'vm',
];

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@typescript-eslint/no-non-null-assertion': 'off',
    },
  },
  {
    files: ['src/core/**/*.ts'],
    rules: {
      'no-restricted-imports': ['error', {
        paths: ioModules.flatMap((m) => [m, `node:${m}`]),
        patterns: [
          { group: ['node:*'], message: 'src/core is pure: no Node built-ins.' },
          { group: ['**/adapters/**', '**/app/**', '**/cli/**', '**/bin/**', '**/sim/**', '**/ports/**'],
            message: 'src/core imports only src/core.' },
        ],
      }],
      'no-restricted-globals': ['error',
        ...['setTimeout', 'setInterval', 'setImmediate', 'clearTimeout', 'clearInterval', 'clearImmediate',
          'process', 'fetch', 'performance', 'queueMicrotask', 'require'].map((name) => ({
          name, message: 'src/core is pure: time, timers and process come in as arguments.',
        })),
      ],
      'no-restricted-properties': ['error',
        { object: 'Date', property: 'now', message: 'src/core takes time as an argument.' },
        { object: 'Math', property: 'random', message: 'src/core takes a seeded Prng.' },
        { object: 'crypto', property: 'randomBytes', message: 'src/core takes a seeded Prng.' },
      ],
      'no-restricted-syntax': ['error',
        { selector: "NewExpression[callee.name='Date']", message: 'src/core takes time as an argument.' },
        { selector: "ImportExpression", message: 'src/core has no dynamic imports.' },
      ],
    },
  },
);
