#!/usr/bin/env node
// Writes docs/cli.md from the CLI's own --help texts, so the reference cannot drift from the code.
// Run after `npm run build`: node scripts/write-cli-docs.mjs   (a test checks the file is current)
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const bin = join(root, 'bin', 'tidemark');
const help = (args) => execFileSync(bin, [...args, '--help'], { encoding: 'utf8', env: { ...process.env, COLUMNS: '100' } }).trimEnd();

/** The subcommands a --help text lists under "Commands:" (first word of each entry, help excluded). */
function listedCommands(text) {
  const at = text.indexOf('\nCommands:\n');
  if (at < 0) return [];
  return text.slice(at).split('\n').slice(2)
    .map((line) => /^ {2}([a-z][a-z-]*)/.exec(line)?.[1])
    .filter((name) => name !== undefined && name !== 'help');
}

/** Every command, found by walking the CLI's own help (so a new command cannot be left out). */
export function discoverCommands() {
  const commands = [[]];
  for (const family of listedCommands(help([]))) {
    const subs = listedCommands(help([family]));
    if (subs.length === 0) commands.push([family]);
    for (const sub of subs) commands.push([family, sub]);
  }
  return commands;
}

export function renderCliDocs() {
  const sections = discoverCommands().map((args) => `## ${['tidemark', ...args].join(' ')}\n\n\`\`\`\n${help(args)}\n\`\`\`\n`);
  return `# CLI reference

Generated from \`tidemark … --help\` by \`scripts/write-cli-docs.mjs\`. Every command talks to one array
through its HTTP API, chosen with \`--array URL\` or \`TIDEMARK_ARRAY\` (default http://127.0.0.1:7480),
and prints JSON with \`--json\`. Exit codes: 0 success, 1 refused or failed (the message names a stable
\`TM_ERR_…\` code), 2 usage error. Sizes take bytes or binary units: 4096, 64KiB, 512MiB, 1GiB, 2TiB.

${sections.join('\n')}`;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  writeFileSync(join(root, 'docs', 'cli.md'), renderCliDocs());
  console.log('wrote docs/cli.md');
}
