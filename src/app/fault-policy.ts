// What the daemon does with an exception nothing caught: log it with its context, then exit at
// once with EXIT_UNEXPECTED_FAULT. It does not try to stop cleanly: the state that threw is unknown,
// and code run on top of it could persist a wrong bitmap or acknowledge a write it lost. Exiting is
// safe because every state change that matters survives kill -9 (metadata is renamed into place,
// bitmaps are recovered through the activity log), and a supervisor (systemd Restart=on-failure,
// see docs/security.md) starts the array again from its durable state.

/** sysexits.h EX_SOFTWARE: an internal software error; distinct from 1 (failed to start). */
export const EXIT_UNEXPECTED_FAULT = 70;

export interface FaultLogger {
  fatal(object: object, message: string): void;
}

export type FaultKind = 'uncaughtException' | 'unhandledRejection';

/** The log fields of a thrown value, whatever it is (an Error, a string, anything a promise rejected with). */
export function describeFault(error: unknown): Record<string, unknown> {
  if (error instanceof Error) {
    const e = error as Error & { code?: unknown; cause?: unknown };
    return {
      err: e.message, errName: e.name, stack: e.stack,
      ...(e.code !== undefined ? { code: String(e.code) } : {}),
      ...(e.cause !== undefined ? { cause: e.cause instanceof Error ? e.cause.message : String(e.cause) } : {}),
    };
  }
  let text: string;
  try {
    text = typeof error === 'string' ? error : JSON.stringify(error) ?? String(error);
  } catch {
    text = String(error);
  }
  return { err: text.slice(0, 2000), errName: typeof error };
}

/**
 * The handler for one kind of fault: logs once and exits. A second fault while the first is being
 * handled (the logger itself throwing, another rejection) exits without logging again.
 */
export function faultHandler(logger: FaultLogger, context: () => Record<string, unknown>, exit: (code: number) => void):
  (kind: FaultKind, error: unknown) => void {
  let handling = false;
  return (kind, error) => {
    if (handling) {
      exit(EXIT_UNEXPECTED_FAULT);
      return;
    }
    handling = true;
    try {
      let fields: Record<string, unknown> = {};
      try {
        fields = context();
      } catch (contextError) {
        fields = { contextError: String(contextError) };
      }
      logger.fatal({ ...fields, fault: kind, ...describeFault(error), exitCode: EXIT_UNEXPECTED_FAULT },
        'unexpected fault: the array exits rather than run on in an unknown state');
    } finally {
      exit(EXIT_UNEXPECTED_FAULT);
    }
  };
}

/** Installs the handler for uncaught exceptions and unhandled rejections of this process. */
export function installFaultPolicy(logger: FaultLogger, context: () => Record<string, unknown>,
  exit: (code: number) => void = (code) => process.exit(code)): void {
  const handle = faultHandler(logger, context, exit);
  process.on('uncaughtException', (error) => handle('uncaughtException', error));
  process.on('unhandledRejection', (reason) => handle('unhandledRejection', reason));
}
