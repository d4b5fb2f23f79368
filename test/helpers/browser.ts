// The dashboard's browser tests share this: Debian's chromium driven by playwright-core (never a
// tool's own browser download), where screenshots go, and the prerequisite check (under CI=true a
// missing browser fails the test with the reason, through requirement()).
import { access } from 'node:fs/promises';
import { join } from 'node:path';
import { repoRoot } from './daemon.js';
import { missingTools } from './requirement.js';

export const CHROMIUM = '/usr/bin/chromium';
/** Screenshots the browser tests keep (gitignored). */
export const ARTIFACTS = join(repoRoot, 'test-artifacts');

/** Why the browser tests cannot run here (chromium or a client tool they also use missing), or false. */
export async function browserTestMissing(tools: readonly string[] = []): Promise<string | false> {
  try {
    await access(CHROMIUM);
  } catch {
    return `${CHROMIUM} is missing (apt-get install chromium; .ci/run installs it)`;
  }
  return tools.length > 0 ? missingTools(tools) : false;
}
