// Reads a child's report pipe line by line, for the transfer-mode update programs (a module of its own, so that the
// exec-mode program, which loads inside its blackout, does not load node:readline).
import * as readline from 'node:readline';
import type { Readable } from 'node:stream';

/** Each call resolves with the next line, or null once the stream has ended or failed. */
export function lineReader(stream: Readable): () => Promise<string | null> {
  const lines = readline.createInterface({ input: stream, crlfDelay: Infinity })[Symbol.asyncIterator]();
  return async () => {
    try {
      const next = await lines.next();
      return next.done ? null : next.value;
    } catch {
      return null;
    }
  };
}
