/** A cache of fetched documents (discovery, JWKS), shared by concurrent callers. */

/** @internal One fetch, done or in flight. */
interface Entry<T> {
  readonly at: number;
  failed: boolean;
  readonly value: Promise<T>;
}

/**
 * @internal Answers the cached value of `key` while it is younger than `maxAgeMs` (a failed fetch:
 * `failureBackoffMs`), else starts `load` and caches that. Decided synchronously, so that callers
 * arriving together share one fetch, and a failing source is not asked again before the back-off.
 */
export function cached<T>(
  entries: Map<string, Entry<T>>,
  key: string,
  ages: { readonly maxAgeMs: number; readonly failureBackoffMs: number },
  load: () => Promise<T>,
): Promise<T> {
  const hit = entries.get(key);
  if (hit && Date.now() - hit.at < (hit.failed ? ages.failureBackoffMs : ages.maxAgeMs)) return hit.value;
  const entry: Entry<T> = { at: Date.now(), failed: false, value: load() };
  entries.set(key, entry);
  entry.value.catch(() => {
    entry.failed = true;
  });
  return entry.value;
}

/** @internal The entries of one cache. */
export type CacheEntries<T> = Map<string, Entry<T>>;
