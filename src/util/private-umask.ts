/**
 * Imported first by main.ts: everything cairn creates is owner-only (files 0600, folders 0700)
 * whatever umask the operator's shell or unit has, including the files SQLite creates (it
 * gives -wal and -shm the database file's mode). Code that creates files also asks for those
 * modes itself; this is the net under it.
 */
process.umask(0o077);
