// The performance goals (issue "Performance"), printed beside the ratios each bench measures, so
// one run says which goals hold on this machine and by how much.

export interface GoalResult {
  readonly met: boolean;
  readonly line: string;
}

/**
 * `value` against `target`: met when value ≥ target (`atLeast`) or value ≤ target (`atMost`).
 * `unit` is how the value reads ("x" for ratios, " µs" for latencies).
 */
export function goal(label: string, value: number, comparison: 'atLeast' | 'atMost', target: number, unit = 'x'): GoalResult {
  const met = comparison === 'atLeast' ? value >= target : value <= target;
  const shown = (n: number): string => (unit === 'x' ? n.toFixed(2) : n.toFixed(0));
  const line = `goal ${met ? '✓' : '✗'} ${label}: ${shown(value)}${unit} (${comparison === 'atLeast' ? '≥' : '≤'} ${shown(target)}${unit})`;
  console.log(line);
  return { met, line };
}
