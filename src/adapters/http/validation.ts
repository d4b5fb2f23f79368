// Request validation with TypeBox's compiled checkers. Query strings are converted to the schema's
// types first (they arrive as text); bodies are not, so `"sizeBytes": "1024"` is refused rather than
// guessed at. A failure is a TM_ERR_INVALID_ARGUMENT naming every offending field.
import type { TSchema } from '@sinclair/typebox';
import { TypeCompiler } from '@sinclair/typebox/compiler';
import { Value } from '@sinclair/typebox/value';
import { invalidArgument, type TidemarkError } from '../../core/errors.js';

export type RequestPart = 'body' | 'params' | 'querystring';

/** Reports at most this many problems per request. */
const MAX_ISSUES = 10;

export type Validator = (data: unknown) => { value: unknown } | { error: TidemarkError };

export function compileValidator(schema: TSchema, part: RequestPart): Validator {
  const checker = TypeCompiler.Compile(schema);
  return (data) => {
    // A POST without a body means "no options" when the schema allows an empty object.
    const value = part === 'body' ? (data ?? (checker.Check({}) ? {} : data)) : Value.Convert(schema, data ?? {});
    if (checker.Check(value)) return { value };
    const issues: Array<{ path: string; message: string }> = [];
    for (const e of checker.Errors(value)) {
      if (issues.length >= MAX_ISSUES) break;
      const where = e.path === '' ? part : `${part}${e.path}`;
      const hint = typeof e.schema.description === 'string' ? ` (${e.schema.description})` : '';
      issues.push({ path: where, message: `${e.message}${hint}` });
    }
    const summary = issues.map((i) => `${i.path}: ${i.message}`).join('; ');
    return { error: invalidArgument(`invalid request ${part}: ${summary || 'does not match the schema'}`, { issues }) };
  };
}
