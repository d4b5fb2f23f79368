// Invariant checks. A failed assertion is a bug: it throws and must never be caught and ignored.

export class AssertionFailure extends Error {
  override name = 'AssertionFailure';
}

export function assert(condition: unknown, message: string): asserts condition {
  if (!condition) throw new AssertionFailure(message);
}

export function assertNever(value: never, what = 'value'): never {
  throw new AssertionFailure(`unhandled ${what}: ${JSON.stringify(value)}`);
}

export function assertInteger(value: number, what: string): void {
  if (!Number.isSafeInteger(value)) throw new AssertionFailure(`${what} must be a safe integer, got ${value}`);
}
