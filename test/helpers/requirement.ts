// One place decides what a test does when something it needs is missing from the machine (root,
// network namespaces, an NBD client tool). On a developer's machine it skips with the reason; under
// CI (`CI=true`, as CI services set it) it fails with the reason, because a CI run that silently
// skips the namespace or client tests proves nothing about them.
import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';

/** True when the environment says this is a CI run (`CI=true` or `CI=1`). */
export function underCi(env: NodeJS.ProcessEnv = process.env): boolean {
  return env.CI === 'true' || env.CI === '1';
}

/**
 * The `skip` test option for a prerequisite: `missing` is why it is unavailable, or false when it
 * is there. Under CI a missing prerequisite throws, so the test file fails with the reason.
 */
export function requirement(missing: string | false, env: NodeJS.ProcessEnv = process.env): string | false {
  if (missing === false) return false;
  if (underCi(env)) throw new Error(`CI=true and a test prerequisite is missing: ${missing}`);
  return missing;
}

/** Which of `tools` are not on PATH as executables: a reason naming them, or false when all are. */
export function missingTools(tools: readonly string[], env: NodeJS.ProcessEnv = process.env): string | false {
  const dirs = (env.PATH ?? '').split(delimiter).filter((d) => d !== '');
  const onPath = (tool: string): boolean => dirs.some((dir) => {
    try {
      accessSync(join(dir, tool), constants.X_OK);
      return true;
    } catch {
      return false; // not in this directory (or not executable): look in the next one
    }
  });
  const missing = tools.filter((t) => !onPath(t));
  return missing.length === 0 ? false : `not installed (not on PATH): ${missing.join(', ')}`;
}
