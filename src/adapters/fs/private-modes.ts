// Everything an array writes is its own: volume data, metadata (which holds the peer secrets),
// activity logs, spill files and tokens. The modes are passed at creation, so whatever the process
// umask, nothing is ever readable by another user, not even for the moment before a chmod.
export const PRIVATE_FILE_MODE = 0o600;
export const PRIVATE_DIR_MODE = 0o700;
