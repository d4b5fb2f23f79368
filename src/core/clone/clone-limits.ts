// Bounds of the clone feature.
export const MAX_SESSIONS_PER_VOLUME = 16;
