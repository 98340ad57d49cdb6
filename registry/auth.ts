import cluster from 'node:cluster';
import { readFileSync } from 'node:fs';
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import bcrypt from 'bcryptjs';
import { AcpackError } from '../oci/errors.js';

interface Credentials {
  user: string;
  password: string;
  /** Names this exact user:password against the hash it is checked with (cache and coalescing key). */
  key: string;
  hash: string;
}

/**
 * htpasswd users (bcrypt only, as distribution requires). A verified user:password pair is
 * remembered by its hash, so bcrypt's deliberate slowness is paid once per client, not per request.
 * A user the file does not know is checked against a dummy hash of the same cost, so a wrong
 * password takes as long whether the user exists or not.
 */
export class Htpasswd {
  private readonly users = new Map<string, string>();
  private readonly verified = new Set<string>();
  /** Compares running now, by key: the same credentials sent on several connections are compared once. */
  private readonly inflight = new Map<string, Promise<boolean>>();
  private readonly dummy: string;

  constructor(file: string) {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (err) {
      throw new AcpackError('BAD_ARGUMENT', `cannot read htpasswd file ${file}: ${(err as NodeJS.ErrnoException).code}`);
    }
    text.split('\n').forEach((line, i) => {
      const l = line.trim();
      if (!l || l.startsWith('#')) return;
      const colon = l.indexOf(':');
      const hash = l.slice(colon + 1);
      if (colon <= 0 || !/^\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}$/.test(hash)) {
        throw new AcpackError('BAD_ARGUMENT', `${file}:${i + 1}: not a bcrypt htpasswd entry (create one with: htpasswd -B -c ${file} USER)`);
      }
      this.users.set(l.slice(0, colon), hash);
    });
    this.dummy = dummyHash(commonestCost([...this.users.values()]));
  }

  /** user:password from an `Authorization: Basic …` header, or undefined when there is none to check. */
  credentials(header: string | undefined): Credentials | undefined {
    if (!header?.startsWith('Basic ')) return undefined;
    const decoded = Buffer.from(header.slice(6), 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    if (colon <= 0) return undefined;
    const user = decoded.slice(0, colon);
    const hash = this.users.get(user) ?? this.dummy;
    const key = createHash('sha256').update(`${hash}\0${decoded}`).digest('hex');
    return { user, password: decoded.slice(colon + 1), key, hash };
  }

  /** Already proven right: no bcrypt needed. */
  known(c: Credentials): boolean {
    return this.verified.has(c.key);
  }

  /** The compare already running for these exact credentials, if any. */
  pending(c: Credentials): Promise<boolean> | undefined {
    return this.inflight.get(c.key);
  }

  /** The bcrypt compare (shared with any identical one in flight); an unknown user is compared with the dummy hash. */
  verify(c: Credentials): Promise<boolean> {
    if (this.verified.has(c.key)) return Promise.resolve(true);
    const running = this.inflight.get(c.key);
    if (running) return running;
    // bcryptjs's async compare works in slices, so other requests keep flowing meanwhile.
    const p = bcrypt
      .compare(c.password, c.hash)
      .then((ok) => {
        if (ok && c.hash !== this.dummy) {
          this.verified.add(c.key);
          return true;
        }
        return false;
      })
      .finally(() => this.inflight.delete(c.key));
    this.inflight.set(c.key, p);
    return p;
  }
}

/** The cost most of the file's hashes use (10 for a file without users). */
function commonestCost(hashes: string[]): number {
  const counts = new Map<number, number>();
  for (const h of hashes) {
    const cost = bcrypt.getRounds(h);
    counts.set(cost, (counts.get(cost) ?? 0) + 1);
  }
  let best = 10;
  let most = 0;
  for (const [cost, n] of counts) {
    if (n > most) [best, most] = [cost, n];
  }
  return best;
}

/** A well-formed bcrypt hash of that cost that no password is known to match: a random salt and a random hash part. */
function dummyHash(cost: number): string {
  const alphabet = './ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
  return bcrypt.genSaltSync(cost) + Array.from(randomBytes(31), (b) => alphabet[b & 63]).join('');
}

/**
 * Slows down password guessing: an address gets `limit` attempts within `windowMs` (a success starts
 * it over); past that it gets 429 without a bcrypt check until the window has passed. An attempt is
 * reserved before the compare, so parallel guesses are counted as they arrive, not as they finish.
 */
export class LoginThrottle {
  private readonly attempts = new Map<string, { count: number; since: number }>();

  constructor(
    private readonly limit = 10,
    private readonly windowMs = 60_000,
  ) {}

  /** Takes one attempt for `addr`; false when it has none left. */
  reserve(addr: string, now = Date.now()): boolean {
    const a = this.attempts.get(addr);
    if (!a || now - a.since > this.windowMs) {
      this.attempts.delete(addr);
      this.attempts.set(addr, { count: 1, since: now });
      // Bounded: an attacker cycling addresses cannot grow this without limit.
      if (this.attempts.size > 10_000) this.attempts.delete(this.attempts.keys().next().value!);
      return true;
    }
    if (a.count >= this.limit) return false;
    a.count++;
    return true;
  }

  /** The reserved attempt's outcome: a success clears the address, a failure keeps its count, unused gives it back. */
  settle(addr: string, outcome: Outcome): void {
    if (outcome === 'ok') this.attempts.delete(addr);
    else if (outcome === 'unused') {
      const a = this.attempts.get(addr);
      if (a && a.count > 0) a.count--;
    }
  }
}

export type Outcome = 'ok' | 'failed' | 'unused';

/** One reserved login attempt, to be settled once. */
export interface Attempt {
  done(outcome: Outcome): void;
}

/** Where attempts are counted: in this process, or (a `serve` worker) in the primary, for every worker at once. */
export interface AttemptGate {
  /** undefined: the address has no attempts left. */
  begin(addr: string): Promise<Attempt | undefined>;
}

class LocalGate implements AttemptGate {
  constructor(readonly throttle = new LoginThrottle()) {}

  async begin(addr: string): Promise<Attempt | undefined> {
    if (!this.throttle.reserve(addr)) return undefined;
    return { done: (outcome) => this.throttle.settle(addr, outcome) };
  }
}

type GateMessage =
  | { type: 'acpack:login-reserve'; id: string; addr: string }
  | { type: 'acpack:login-settle'; addr: string; outcome: Outcome }
  | { type: 'acpack:login-reply'; id: string; allowed: boolean };

/** In a cluster worker: attempts are reserved by the primary (a message round trip, no lock, no file). */
class PrimaryGate implements AttemptGate {
  private readonly waiting = new Map<string, (allowed: boolean) => void>();
  /** Used only if the primary does not answer (it always should): never less strict than one process alone. */
  private readonly fallback = new LocalGate();

  constructor(private readonly timeoutMs = 2000) {
    process.on('message', (m: GateMessage) => {
      if (m?.type !== 'acpack:login-reply') return;
      this.waiting.get(m.id)?.(m.allowed);
    });
  }

  begin(addr: string): Promise<Attempt | undefined> {
    return new Promise((resolve) => {
      const id = randomUUID();
      const answered = () => {
        clearTimeout(timer);
        return this.waiting.delete(id); // false: answered already
      };
      const viaPrimary = (allowed: boolean) => {
        if (answered()) resolve(allowed ? { done: (outcome) => send({ type: 'acpack:login-settle', addr, outcome }) } : undefined);
      };
      const local = () => {
        if (answered()) resolve(this.fallback.begin(addr));
      };
      const timer = setTimeout(local, this.timeoutMs);
      this.waiting.set(id, viaPrimary);
      send({ type: 'acpack:login-reserve', id, addr }, local);
    });
  }
}

/** To the primary; `failed` runs when the message cannot go (the primary is gone). */
function send(m: GateMessage, failed?: () => void): void {
  try {
    process.send!(m, undefined, {}, (err: Error | null) => {
      if (err) failed?.();
    });
  } catch {
    failed?.();
  }
}

/** The gate for this process: a `serve` worker counts in the primary (see serveLoginThrottle), anything else here. */
export function attemptGate(): AttemptGate {
  return cluster.isWorker ? new PrimaryGate() : new LocalGate();
}

/** In the primary of a `serve` with workers: one login count per address for all of them. */
export function serveLoginThrottle(throttle = new LoginThrottle()): void {
  cluster.on('message', (worker, m: GateMessage) => {
    if (m?.type === 'acpack:login-reserve') {
      const reply: GateMessage = { type: 'acpack:login-reply', id: m.id, allowed: throttle.reserve(m.addr) };
      if (worker.isConnected()) worker.send(reply);
    } else if (m?.type === 'acpack:login-settle') {
      throttle.settle(m.addr, m.outcome);
    }
  });
}

export type LoginResult = { user: string } | { refused: 'missing' | 'wrong' | 'throttled' };

/** Users and the throttle together: what a request's Authorization header gets it. */
export class Logins {
  constructor(
    private readonly users: Htpasswd,
    private readonly gate: AttemptGate = attemptGate(),
  ) {}

  async check(header: string | undefined, addr: string): Promise<LoginResult> {
    const c = this.users.credentials(header);
    if (!c) return { refused: 'missing' };
    if (this.users.known(c)) return { user: c.user };
    // The same guess already being compared is not a new attempt: wait for its answer.
    const running = this.users.pending(c);
    if (running) return (await running) ? { user: c.user } : { refused: 'wrong' };
    const attempt = await this.gate.begin(addr);
    if (!attempt) return { refused: 'throttled' };
    if (this.users.known(c) || this.users.pending(c)) {
      // Settled by an identical request while this one waited for its reservation.
      attempt.done('unused');
      return (await this.users.verify(c)) ? { user: c.user } : { refused: 'wrong' };
    }
    let ok = false;
    try {
      ok = await this.users.verify(c);
    } finally {
      attempt.done(ok ? 'ok' : 'failed');
    }
    return ok ? { user: c.user } : { refused: 'wrong' };
  }
}
