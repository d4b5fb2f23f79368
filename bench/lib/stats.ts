// Small statistics shared by the benches.

/** The arithmetic mean of a non-empty list. */
export const mean = (xs: readonly number[]): number => xs.reduce((a, x) => a + x, 0) / xs.length;
