import { Client, type ConnectConfig } from 'ssh2';
import { writeFileAtomic } from '../oci/atomic-file.js';
import { createHash } from 'node:crypto';
import { appendFile, mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { redact } from './redact.js';
import { readFileSync } from 'node:fs';
import { AcpackError } from '../oci/errors.js';
import type { HostSpec } from './cluster-spec.js';
import { RUNS_DIR } from './node-setup.js';

export interface ExecResult {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * A command run detached from any SSH session (see SshHost.runDetached): never started here, still
 * running, finished with its exit code, or lost — started, but gone without an exit status (killed,
 * or its node lost power).
 */
export type DetachedRun =
  | { state: 'none' }
  | { state: 'running'; pid: number }
  | { state: 'finished'; code: number; stdout: string; stderr: string }
  | { state: 'lost'; stdout: string; stderr: string };

const RUN_EOF = 'ACPACK_RUN_EOF';

function runDir(id: string): string {
  if (!/^[a-z0-9][a-z0-9.-]*$/.test(id)) throw new AcpackError('BAD_ARGUMENT', `"${id}" cannot name a detached run`);
  return `${RUNS_DIR}/${id}`;
}

/**
 * A run is alive while the process recorded in its pid file, in this boot, is still its wrapper
 * (checked by command line, so a PID reused after a reboot or a crash is not taken for it).
 */
const ALIVE = `alive() {
  [ -f "$d/pid" ] || return 1
  pid=$(sed -n 1p "$d/pid"); boot=$(sed -n 2p "$d/pid")
  [ "$boot" = "$(cat /proc/sys/kernel/random/boot_id)" ] || return 1
  { tr '\\0' ' ' < "/proc/$pid/cmdline"; } 2>/dev/null | grep -qF " acpack-run $d "
}`;

/**
 * The wrapper, in a session of its own (setsid, no terminal, standard streams on files): records
 * its PID and the boot, runs the command, then writes the exit status beside it (temp + rename,
 * synced), the mark of a run that ended.
 */
const WRAPPER = [
  'd="$1"',
  'printf \'%s\\n%s\\n\' "$$" "$(cat /proc/sys/kernel/random/boot_id)" > "$d/pid.tmp" && mv "$d/pid.tmp" "$d/pid"',
  'sh "$d/cmd" > "$d/out" 2> "$d/err" < /dev/null',
  'echo $? > "$d/status.tmp"',
  'sync "$d/status.tmp" "$d/out" 2>/dev/null',
  'mv "$d/status.tmp" "$d/status"',
  'sync "$d" 2>/dev/null || true',
].join('\n');

function startScript(id: string, command: string, prepare?: string): string {
  const d = runDir(id);
  if (command.split('\n').includes(RUN_EOF)) throw new AcpackError('BAD_ARGUMENT', `a detached command may not hold a line ${RUN_EOF}`);
  return [
    'set -e',
    'umask 077',
    `d=${d}`,
    ALIVE,
    'mkdir -p "$d"',
    `if [ ! -f "$d/status" ] && alive; then echo "${id} is still running (process $pid)" >&2; exit 3; fi`,
    ...(prepare ? [prepare] : []),
    'rm -f "$d/status" "$d/pid" "$d/out" "$d/err"',
    `cat > "$d/cmd" <<'${RUN_EOF}'`,
    command,
    RUN_EOF,
    `setsid sh -c '${WRAPPER.replace(/'/g, `'\\''`)}' acpack-run "$d" < /dev/null > /dev/null 2>&1 &`,
    // Back only once the run has recorded itself: a start is never lost between this session and it.
    'i=0',
    `while [ ! -f "$d/pid" ]; do i=$((i + 1)); if [ $i -gt 200 ]; then echo "${id} did not start" >&2; exit 1; fi; sleep 0.05; done`,
  ].join('\n');
}

/** Prints the run's state on one line (waiting up to `waitS` while it runs), then what `probe` prints. */
function waitScript(id: string, waitS: number, probe?: string): string {
  const d = runDir(id);
  return [
    `d=${d}`,
    ALIVE,
    'b64() { base64 -w0 < "$1" 2>/dev/null || true; }',
    `end=$(( $(date +%s) + ${waitS} ))`,
    'if [ ! -f "$d/cmd" ]; then echo none',
    'else',
    '  while [ ! -f "$d/status" ] && alive && [ "$(date +%s)" -lt "$end" ]; do sleep 0.5; done',
    '  if [ -f "$d/status" ]; then echo "finished $(cat "$d/status") $(b64 "$d/out") $(b64 "$d/err")"',
    '  elif alive; then echo "running $pid"',
    '  else echo "lost $(b64 "$d/out") $(b64 "$d/err")"; fi',
    'fi',
    ...(probe ? [probe] : []),
  ].join('\n');
}

function parseRun(output: string): DetachedRun & { probe: string } {
  const [line, ...rest] = output.split('\n');
  const probe = rest.join('\n');
  const out = line.trim().split(' ');
  const text = (b64: string | undefined) => Buffer.from(b64 ?? '', 'base64').toString();
  if (out[0] === 'finished') return { state: 'finished', code: Number(out[1]), stdout: text(out[2]), stderr: text(out[3]), probe };
  if (out[0] === 'running') return { state: 'running', pid: Number(out[1]), probe };
  if (out[0] === 'lost') return { state: 'lost', stdout: text(out[1]), stderr: text(out[2]), probe };
  return { state: 'none', probe };
}

/**
 * Host keys recorded on first contact (trust on first use, as ssh does); a host whose key changed
 * is refused until its line is removed. Stored as JSON: { "ip:port": "SHA256:…" }.
 */
export class KnownHosts {
  private entries: Record<string, string> = {};
  private dirty = false;

  private constructor(readonly file: string) {}

  /** The host keys acinstall keeps in its state directory. */
  static inStore(dir: string): Promise<KnownHosts> {
    return KnownHosts.open(join(dir, 'known_hosts.json'));
  }

  static async open(file: string): Promise<KnownHosts> {
    const k = new KnownHosts(file);
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return k; // first contact with every host
      throw new AcpackError('BAD_KNOWN_HOSTS', `cannot read the recorded host keys ${file}: ${(err as NodeJS.ErrnoException).code}`);
    }
    // A damaged file must not quietly trust every host anew (and be overwritten): it is an error.
    try {
      k.entries = JSON.parse(text);
    } catch (err) {
      throw new AcpackError('BAD_KNOWN_HOSTS', `${file} is not valid JSON (${(err as Error).message}): mend it (an object of "ip:port": "SHA256:…") or remove it to record every host key anew`);
    }
    return k;
  }

  /** Checks a presented key; returns undefined when fine, else the fingerprint it expected. */
  verify(host: string, key: Buffer): { ok: true } | { ok: false; expected: string; got: string } {
    const got = `SHA256:${createHash('sha256').update(key).digest('base64').replace(/=+$/, '')}`;
    const expected = this.entries[host];
    if (!expected) {
      this.entries[host] = got;
      this.dirty = true;
      return { ok: true };
    }
    return expected === got ? { ok: true } : { ok: false, expected, got };
  }

  async save(): Promise<void> {
    if (!this.dirty) return;
    await writeFileAtomic(this.file, `${JSON.stringify(this.entries, null, 2)}\n`, 0o600);
    this.dirty = false;
  }
}

/**
 * One SSH connection to a node. Secrets (password, key) are used, never logged. With a log
 * directory, every command and its output go to `<dir>/<ip>.log`, join secrets redacted.
 */
export class SshHost {
  private readonly client = new Client();

  /** Set once the connection is gone; every command after (or during) it fails with this. */
  private lost?: AcpackError;

  private constructor(
    readonly spec: HostSpec,
    private readonly logFile?: string,
  ) {}

  static async connect(spec: HostSpec, known: KnownHosts, opts: { timeoutMs?: number; logDir?: string } = {}): Promise<SshHost> {
    const timeoutMs = opts.timeoutMs ?? 15_000;
    if (opts.logDir) await mkdir(opts.logDir, { recursive: true });
    const h = new SshHost(spec, opts.logDir ? join(opts.logDir, `${spec.ip}.log`) : undefined);
    const name = `${spec.ip}:${spec.port}`;
    let refusal: AcpackError | undefined;
    const config: ConnectConfig = {
      host: spec.ip,
      port: spec.port,
      username: spec.user,
      readyTimeout: timeoutMs,
      // A node that dies or drops off the network is noticed within ~20 s, not at TCP's 15 minutes.
      keepaliveInterval: 5000,
      keepaliveCountMax: 3,
      hostVerifier: (key: Buffer) => {
        const v = known.verify(name, key);
        if (v.ok) return true;
        refusal = new AcpackError(
          'HOST_KEY_CHANGED',
          `the host key of ${name} changed (recorded ${v.expected}, now ${v.got}): if ${spec.ip} was reinstalled, remove its entry from ${known.file}; otherwise someone may be in between`,
        );
        return false;
      },
    };
    if (spec.keyFile) {
      try {
        config.privateKey = readFileSync(spec.keyFile);
      } catch (err) {
        throw new AcpackError('BAD_CLUSTER', `cannot read the private key ${spec.keyFile}: ${(err as NodeJS.ErrnoException).code}`);
      }
    }
    if (spec.password) config.password = spec.password;
    await new Promise<void>((resolve, reject) => {
      h.client.once('ready', () => resolve());
      // on, not once: ssh2 may emit a second error for one failure (ECONNRESET, then "Connection lost
      // before handshake"), and an 'error' without a listener crashes the process.
      h.client.on('error', (err: Error & { level?: string }) => {
        if (refusal) return reject(refusal);
        if (err.level === 'client-authentication') {
          return reject(new AcpackError('SSH_AUTH', `${spec.user}@${name} refused the ${spec.keyFile ? 'key' : 'password'}: check the credentials`));
        }
        reject(new AcpackError('SSH_UNREACHABLE', `cannot reach ${name} over SSH: ${(err as NodeJS.ErrnoException).code ?? err.message}`));
      });
      try {
        h.client.connect(config);
      } catch (err) {
        // ssh2 throws here for a key it cannot use (a public key, an encrypted one).
        reject(new AcpackError('BAD_CLUSTER', `cannot use the private key ${spec.keyFile ?? ''} for ${name}: ${(err as Error).message}`));
      }
    });
    const lost = (why: string) => {
      h.lost ??= new AcpackError('SSH_LOST', `${spec.ip}: the connection was lost (${why}): the node died or left the network`);
    };
    h.client.on('error', (err) => lost(err.message));
    h.client.on('close', () => lost('closed'));
    return h;
  }

  /**
   * Runs a step's command and fails it unless it exits 0: `<ip>: <what> failed (<code>): <the end of
   * what it said>`, secrets redacted. Returns its standard output.
   */
  async check(command: string, what: string, timeoutMs = 120_000, input?: string): Promise<string> {
    const r = await this.exec(command, timeoutMs, input);
    if (r.code !== 0) throw new AcpackError('NODE_STEP', `${this.spec.ip}: ${what} failed (${r.code}): ${redact(r.stderr.trim() || r.stdout.trim()).slice(-500)}`);
    return r.stdout;
  }

  /**
   * Runs a command; stdout and stderr are consumed (ssh2 never closes a channel left unread).
   * `input` goes to its standard input and is never logged (what holds a secret travels there).
   */
  async exec(command: string, timeoutMs = 120_000, input?: string): Promise<ExecResult> {
    const t0 = Date.now();
    const r = await this.run(command, timeoutMs, input);
    if (this.logFile) {
      const cut = (s: string) => (s.length > 4000 ? `${s.slice(0, 4000)}… (${s.length} chars)` : s);
      const stdin = input === undefined ? '' : `(${Buffer.byteLength(input)} bytes on standard input, not logged)\n`;
      await appendFile(
        this.logFile,
        redact(`--- ${new Date(t0).toISOString()} (${Date.now() - t0} ms, exit ${r.code})\n$ ${cut(command)}\n${stdin}${cut(r.stdout)}${r.stderr ? `[stderr]\n${cut(r.stderr)}` : ''}\n`),
      );
    }
    return r;
  }

  /**
   * Where the detached run `id` stands; while it runs, waits up to `waitMs` for it to end (one
   * command on the node: nothing is lost if this connection drops meanwhile). `probe`, a shell
   * snippet run on the node after the wait, adds what it prints.
   */
  async detachedRun(id: string, waitMs = 0, probe?: string): Promise<DetachedRun & { probe: string }> {
    return parseRun(await this.check(waitScript(id, Math.ceil(waitMs / 1000), probe), `looking at ${id}`, waitMs + 60_000));
  }

  /**
   * Runs `command` on the node detached from this SSH session — in a session of its own, its PID,
   * output and exit status in files under RUNS_DIR/<id> — so that it runs on when the connection
   * drops, and waits for its end (one round trip: the start, then the wait of detachedRun).
   * `prepare` runs first, in this session (e.g. writing a file from `input`, standard input that is
   * never logged). Refused while a run of that id is still going.
   */
  async runDetached(id: string, command: string, timeoutMs: number, prepare?: { script: string; input?: string }): Promise<DetachedRun> {
    const script = [startScript(id, command, prepare?.script), 'set +e', waitScript(id, Math.ceil(timeoutMs / 1000))].join('\n');
    const r = parseRun(await this.check(script, `running ${id}`, timeoutMs + 60_000, prepare?.input));
    if (r.state === 'running') throw new AcpackError('SSH_TIMEOUT', `${this.spec.ip}: ${id} did not finish within ${Math.round(timeoutMs / 1000)} s (it runs on; a re-run waits for it)`);
    return r;
  }

  private run(command: string, timeoutMs: number, input?: string): Promise<ExecResult> {
    if (this.lost) return Promise.reject(this.lost);
    return new Promise((resolve, reject) => {
      this.client.exec(command, (err, channel) => {
        if (err && this.lost) return reject(this.lost);
        if (err) return reject(new AcpackError('SSH_EXEC', `${this.spec.ip}: cannot run a command: ${err.message}`));
        if (input !== undefined) channel.end(input);
        let stdout = '';
        let stderr = '';
        const timer = setTimeout(() => {
          channel.close();
          reject(new AcpackError('SSH_TIMEOUT', `${this.spec.ip}: a command did not finish within ${Math.round(timeoutMs / 1000)} s`));
        }, timeoutMs);
        channel.on('data', (c: Buffer) => (stdout += c.toString()));
        channel.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
        channel.on('close', (code: number | null) => {
          clearTimeout(timer);
          // No exit status: the channel died with its connection, whose error may come a moment later.
          setImmediate(() => (this.lost && code == null ? reject(this.lost) : resolve({ code: code ?? -1, stdout, stderr })));
        });
      });
    });
  }

  close(): void {
    this.client.end();
  }
}
