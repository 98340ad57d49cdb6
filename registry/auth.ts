import { readFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import bcrypt from 'bcryptjs';
import { AcpackError } from '../oci/errors.js';

/**
 * htpasswd users (bcrypt only, as distribution requires). A verified user:password pair is
 * remembered by its hash, so bcrypt's deliberate slowness is paid once per client, not per request.
 */
export class Htpasswd {
  private readonly users = new Map<string, string>();
  private readonly verified = new Set<string>();

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
      if (colon <= 0 || !/^\$2[aby]\$\d\d\$/.test(hash)) {
        throw new AcpackError('BAD_ARGUMENT', `${file}:${i + 1}: not a bcrypt htpasswd entry (create one with: htpasswd -B -c ${file} USER)`);
      }
      this.users.set(l.slice(0, colon), hash);
    });
  }

  /** The user an `Authorization: Basic …` header proves, or undefined. */
  async check(header: string | undefined): Promise<string | undefined> {
    if (!header?.startsWith('Basic ')) return undefined;
    const decoded = Buffer.from(header.slice(6), 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    if (colon <= 0) return undefined;
    const user = decoded.slice(0, colon);
    const hash = this.users.get(user);
    if (!hash) return undefined;
    const key = createHash('sha256').update(`${hash}\0${decoded}`).digest('hex');
    if (this.verified.has(key)) return user;
    // bcryptjs's async compare works in slices, so other requests keep flowing meanwhile.
    if (!(await bcrypt.compare(decoded.slice(colon + 1), hash))) return undefined;
    this.verified.add(key);
    return user;
  }
}

/**
 * Slows down password guessing: after `limit` failed logins from one address within `windowMs`,
 * that address gets 429 without a bcrypt check until the window has passed.
 */
export class LoginThrottle {
  private readonly failures = new Map<string, { count: number; since: number }>();

  constructor(
    private readonly limit = 10,
    private readonly windowMs = 60_000,
  ) {}

  blocked(addr: string, now = Date.now()): boolean {
    const f = this.failures.get(addr);
    if (!f) return false;
    if (now - f.since > this.windowMs) {
      this.failures.delete(addr);
      return false;
    }
    return f.count >= this.limit;
  }

  failed(addr: string, now = Date.now()): void {
    const f = this.failures.get(addr);
    if (!f || now - f.since > this.windowMs) this.failures.set(addr, { count: 1, since: now });
    else f.count++;
    // Bounded: an attacker cycling addresses cannot grow this without limit.
    if (this.failures.size > 10_000) this.failures.delete(this.failures.keys().next().value!);
  }

  succeeded(addr: string): void {
    this.failures.delete(addr);
  }
}
