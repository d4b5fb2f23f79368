// Bounds of the clone feature.
export const MAX_SESSIONS_PER_VOLUME = 16;
/**
 * Background copies one session may have in flight. Enough to keep a disk queue busy; small enough
 * that a burst of host writes never waits behind a long copy backlog, and that redoing the
 * in-flight copies after a race or a crash costs little.
 */
export const MAX_COPIES_IN_FLIGHT_PER_SESSION = 64;
/**
 * Host writes (to STD and to split clones together) the set tracks at once. The NBD front end
 * bounds its queue depth far below this; reaching it means a caller forgot writeDone (a leak).
 */
export const MAX_OUTSTANDING_WRITES = 4096;
/** Clone volume names are stored in the persisted session set; names are short identifiers. */
export const MAX_CLONE_NAME_BYTES = 255;
