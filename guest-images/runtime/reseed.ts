/**
 * Fresh user-space randomness for a clone. Every microVM restored from one snapshot resumes with the same
 * memory: V8's Math.random state, OpenSSL's DRBGs and node's caches of random bytes (randomUUID keeps
 * 128 UUIDs' worth, randomInt 6 KiB) are the same in every clone. At /_faas/init the runtime replaces
 * them with state derived from the host's entropy. OpenSSL is reseeded by the native helper (VMs only).
 */

/** The node:crypto calls whose caches are drained (the module the function's code gets too). */
export interface CachingCrypto {
  randomUUID(): string;
  randomInt(max: number): number;
}

/** UUIDs node keeps per refill (lib/internal/crypto/random.js kBatchSize): one full turn refills. */
export const UUID_CACHE_ENTRIES = 128;
/** randomInt draws per refill of its 6 KiB cache (6 bytes a draw). */
export const RANDOM_INT_CACHE_DRAWS = 1024;

/**
 * Uses up what node cached before the snapshot: after a full turn of each cache, every value still in it
 * came from a refill made now (after OpenSSL was reseeded), whatever the position the snapshot left.
 */
export function drainCryptoCaches(crypto: CachingCrypto): void {
  for (let i = 0; i < UUID_CACHE_ENTRIES; i++) crypto.randomUUID();
  // randomInt(1) draws 6 bytes and rejects only 2^48-1, so each call takes exactly one draw.
  for (let i = 0; i < RANDOM_INT_CACHE_DRAWS; i++) crypto.randomInt(1);
}

/**
 * A Math.random replacement: xoshiro128** seeded from 16 bytes (V8 offers no way to reseed its own
 * generator from JavaScript). Not cryptographic, like the one it replaces.
 */
export function seededMathRandom(seed: Uint8Array): () => number {
  if (seed.length < 16) throw new RangeError("Math.random needs a 16-byte seed");
  const view = new DataView(seed.buffer, seed.byteOffset, 16);
  let s0 = view.getUint32(0, true);
  let s1 = view.getUint32(4, true);
  let s2 = view.getUint32(8, true);
  let s3 = view.getUint32(12, true);
  // An all-zero state would only ever give zeros.
  if ((s0 | s1 | s2 | s3) === 0) s0 = 0x9e3779b9;
  const rotl = (x: number, k: number) => (x << k) | (x >>> (32 - k));
  const next = (): number => {
    const result = Math.imul(rotl(Math.imul(s1, 5), 7), 9) >>> 0;
    const t = s1 << 9;
    s2 ^= s0;
    s3 ^= s1;
    s1 ^= s2;
    s0 ^= s3;
    s2 ^= t;
    s3 = rotl(s3, 11);
    return result;
  };
  // 53 random bits, like V8's own doubles in [0, 1).
  return () => ((next() >>> 5) * 67108864 + (next() >>> 6)) / 9007199254740992;
}

/** Replaces `math.random` (the realm's Math, which the function's code shares with the runtime). */
export function reseedMathRandom(math: { random: () => number }, seed: Uint8Array): void {
  Object.defineProperty(math, "random", {
    value: seededMathRandom(seed),
    writable: true,
    configurable: true,
    enumerable: false,
  });
}
