// Stand-in for systemd's service manager on test hosts (systemd is not PID 1 there), run as
// `systemctl` and `journalctl` by small wrappers. It is a small supervisor: `start` runs a unit's
// ExecStartPre= and ExecStart= as systemd parses them from the unit file and its drop-ins, in the
// caller's own root and namespaces (those of the test host), detached from the SSH session; a
// monitor process per unit keeps its main PID, restarts it as Restart= says, and writes its output
// to a per-unit journal that the journalctl stand-in reads. `stop` kills by the recorded PID (test
// hosts share the machine's PID namespace: never by name), and `is-active` follows the live process.
//
// How it reads unit files is systemd-units.mjs. What it does not do: Type=notify readiness (start
// returns once the process is spawned, earlier than systemd would), cgroups (KillMode=control-group
// kills the process group), resource limits, User=, sandboxing, socket activation, dependencies.

import { spawn } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, rmSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import { createHash, randomBytes } from 'node:crypto';
import { dirname, join } from 'node:path';
import { hostname } from 'node:os';
import { fileURLToPath } from 'node:url';
import { canonicalName, commandArgv, findUnitFiles, isSymlink, loadUnit, readTrimmed, safeRealpath, unitEnvironment, UnitError, unitNameParts } from './systemd-units.mjs';

const RUN = '/run/acpack-standins/systemd';
const JOURNAL = '/var/log/acpack-standins/journal';
const CALLS = '/var/log/acpack-standins/systemctl.calls';
const SELF = fileURLToPath(import.meta.url);

function sleepMs(ms) {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/** A process's start time (clock ticks since boot), so a reused PID is never taken for ours. */
function startTime(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (rest[0] === 'Z' || rest[0] === 'X') return undefined; // exited, not yet reaped
    return rest[19];
  } catch {
    return undefined;
  }
}

function alive(p) {
  return !!p && !!p.pid && startTime(p.pid) === p.start;
}

function unitDir(name) {
  return join(RUN, name);
}

function readState(name) {
  try {
    return JSON.parse(readFileSync(join(unitDir(name), 'state.json'), 'utf8'));
  } catch {
    return { active: 'inactive', sub: 'dead', result: 'success', nRestarts: 0 };
  }
}

function writeAtomic(file, text) {
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(`${file}.tmp${process.pid}`, text);
  renameSync(`${file}.tmp${process.pid}`, file);
}

function writeState(name, state) {
  writeAtomic(join(unitDir(name), 'state.json'), `${JSON.stringify(state)}\n`);
  // The PID file, as a daemon's own would be: "pid starttime".
  if (state.main) writeAtomic(join(unitDir(name), 'main.pid'), `${state.main.pid} ${state.main.start}\n`);
  else rmSync(join(unitDir(name), 'main.pid'), { force: true });
}

function updateState(name, patch) {
  const s = { ...readState(name), ...patch };
  writeState(name, s);
  return s;
}

/** The state as the live processes say: a main PID that is gone is not active. */
function liveState(name) {
  const s = readState(name);
  if (s.active === 'active' && s.main && !alive(s.main)) {
    if (s.remainAfterExit) return s;
    // The monitor is the one who notices and restarts; without it the unit is dead.
    if (!alive(s.monitor)) return { ...s, active: 'failed', sub: 'failed', result: 'signal', main: undefined };
    return { ...s, active: 'activating', sub: 'auto-restart' };
  }
  if (s.active === 'activating' && !alive(s.monitor)) return { ...s, active: 'failed', sub: 'failed', result: 'signal' };
  return s;
}

/** One systemctl at a time per unit (systemd serialises jobs). */
function withLock(name, fn) {
  const dir = unitDir(name);
  mkdirSync(dir, { recursive: true });
  const lock = join(dir, 'lock');
  for (let i = 0; ; i++) {
    try {
      writeFileSync(lock, `${process.pid} ${startTime(process.pid)}`, { flag: 'wx' });
      break;
    } catch (err) {
      if (err.code !== 'EEXIST') throw err;
      const [pid, start] = (readTrimmed(lock) ?? '').split(' ');
      if (!alive({ pid: Number(pid), start })) rmSync(lock, { force: true });
      else if (i > 1200) throw new UnitError(`${name}: another systemctl holds the unit for over 60 s`);
      else sleepMs(50);
    }
  }
  try {
    return fn();
  } finally {
    rmSync(lock, { force: true });
  }
}

/**
 * The definition systemd holds for a unit: loaded once and kept while the unit is in use (running,
 * failed, or enabled), until daemon-reload. A unit file changed on disk without daemon-reload is
 * not seen, as with systemd.
 */
function heldDefinition(name) {
  const file = join(unitDir(name), 'loaded.json');
  const s = liveState(name);
  const inUse = ['active', 'activating', 'deactivating', 'failed'].includes(s.active) || enabledState(name) === 'enabled';
  if (inUse && existsSync(file)) return JSON.parse(readFileSync(file, 'utf8'));
  return reloadDefinition(name);
}

function reloadDefinition(name) {
  const def = loadUnit(name);
  writeAtomic(join(unitDir(name), 'loaded.json'), JSON.stringify(def));
  return def;
}

function changedOnDisk(def) {
  if (def.loadState !== 'loaded') return false;
  const now = findUnitFiles(def.id);
  const files = [now.fragment, ...now.dropins];
  if (files.length !== Object.keys(def.sources).length) return true;
  return files.some((f) => {
    try {
      return createHash('sha256').update(readFileSync(f)).digest('hex') !== def.sources[f];
    } catch {
      return true;
    }
  });
}

function wantsLinks(name) {
  const out = [];
  const base = '/etc/systemd/system';
  for (const d of existsSync(base) ? readdirSync(base) : []) {
    if (!/\.(wants|requires)$/.test(d)) continue;
    const link = join(base, d, name);
    if (isSymlink(link)) out.push(link);
  }
  return out;
}

function enabledState(name) {
  if (wantsLinks(name).length) return 'enabled';
  const def = loadUnit(name);
  if (def.loadState === 'not-found') return undefined;
  if (def.loadState === 'masked') return 'masked';
  return def.wantedBy.length || def.requiredBy.length ? 'disabled' : 'static';
}

function journalFile(name, pid, startMs) {
  return join(JOURNAL, name, `${startMs}-${pid}.log`);
}

/** What systemd itself (PID 1) says about a unit in its journal. */
function managerSays(name, text) {
  mkdirSync(join(JOURNAL, name), { recursive: true });
  writeFileSync(journalFile(name, 1, Date.now()), `${text}\n`, { flag: 'a' });
}

const SIGNAL_NUMBERS = { SIGHUP: 1, SIGINT: 2, SIGQUIT: 3, SIGILL: 4, SIGTRAP: 5, SIGABRT: 6, SIGBUS: 7, SIGFPE: 8, SIGKILL: 9, SIGUSR1: 10, SIGSEGV: 11, SIGUSR2: 12, SIGPIPE: 13, SIGALRM: 14, SIGTERM: 15 };

function exitText(how) {
  if (how.signal) return `code=killed, status=${SIGNAL_NUMBERS[how.signal] ?? '?'}/${how.signal.slice(3)}`;
  return `code=exited, status=${how.code}/${how.code === 0 ? 'SUCCESS' : how.code === 203 ? 'EXEC' : 'FAILURE'}`;
}

/** Spawns a command of a unit with its output going to the unit's journal; resolves once spawned. */
function spawnCommand(name, def, cmd, env, detached) {
  mkdirSync(join(JOURNAL, name), { recursive: true });
  const startMs = Date.now();
  const tmp = join(JOURNAL, name, `${startMs}-starting-${process.pid}.log`);
  const fd = openSync(tmp, 'a');
  const argv = commandArgv(cmd, env);
  const child = spawn(cmd.path, argv.slice(1), {
    argv0: argv[0],
    cwd: def.workingDirectory,
    env: Object.fromEntries(env.map((e) => [e.slice(0, e.indexOf('=')), e.slice(e.indexOf('=') + 1)])),
    stdio: ['ignore', fd, fd],
    detached,
  });
  closeSync(fd);
  return new Promise((resolve) => {
    child.once('spawn', () => {
      renameSync(tmp, journalFile(name, child.pid, startMs));
      resolve({ child, pid: child.pid, start: startTime(child.pid) });
    });
    child.once('error', (err) => {
      // systemd's child fails at execve: status 203/EXEC, said in the journal by the manager (PID 1).
      writeFileSync(tmp, `${name}: Failed to execute ${cmd.path}: ${err.message}\n`, { flag: 'a' });
      renameSync(tmp, journalFile(name, 1, startMs));
      resolve({ child: undefined, error: err });
    });
  });
}

function exited(child) {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve({ code: child.exitCode, signal: child.signalCode });
    else child.once('exit', (code, signal) => resolve({ code, signal }));
  });
}

const CLEAN_SIGNALS = ['SIGHUP', 'SIGINT', 'SIGTERM', 'SIGPIPE'];

/** service_shall_restart(): Restart= against how the main process ended. */
function shallRestart(policy, how) {
  const clean = how.error === undefined && ((how.signal === null && how.code === 0) || CLEAN_SIGNALS.includes(how.signal));
  const uncleanSignal = how.signal !== null && how.signal !== undefined && !CLEAN_SIGNALS.includes(how.signal);
  switch (policy) {
    case 'always':
      return true;
    case 'on-success':
      return clean;
    case 'on-failure':
      return !clean;
    case 'on-abnormal':
    case 'on-abort':
      return uncleanSignal;
    default:
      return false;
  }
}

function killMain(def, main, signal) {
  if (!alive(main) || def.killMode === 'none') return;
  try {
    // The main process leads its own process group: control-group and mixed reach its children too.
    process.kill(def.killMode === 'process' ? main.pid : -main.pid, signal);
  } catch {
    try {
      process.kill(main.pid, signal);
    } catch {
      // gone
    }
  }
}

/**
 * The monitor of one unit (one per running unit, detached): runs ExecStartPre=, then ExecStart=,
 * keeps its PID in the state, waits for it, and restarts it as Restart= says; SIGTERM stops it.
 */
async function monitor(name, invocation) {
  const def = JSON.parse(readFileSync(join(unitDir(name), 'loaded.json'), 'utf8'));
  const me = { pid: process.pid, start: startTime(process.pid) };
  let stopping = false;
  let current;
  let wake = () => {};
  process.on('SIGTERM', () => {
    stopping = true;
    wake();
    if (current) void stopMain(current);
  });
  process.on('SIGHUP', () => {});
  const stopMain = async (main) => {
    updateState(name, { active: 'deactivating', sub: 'stop-sigterm' });
    const env = unitEnvironment(def, invocation);
    for (const cmd of def.execStop) {
      const r = await spawnCommand(name, def, cmd, env, false);
      if (r.child) await Promise.race([exited(r.child), new Promise((res) => setTimeout(res, def.timeoutStopMs))]);
    }
    killMain(def, main, def.killSignal);
    const t = setTimeout(() => killMain(def, main, 'SIGKILL'), Math.min(def.timeoutStopMs, 2 ** 31 - 1));
    t.unref();
  };
  const starts = [];
  let nRestarts = readState(name).nRestarts ?? 0;
  for (;;) {
    starts.push(Date.now());
    const limit = def.startLimitIntervalMs > 0 && def.startLimitBurst > 0;
    if (limit && starts.filter((t) => t > Date.now() - def.startLimitIntervalMs).length > def.startLimitBurst) {
      updateState(name, { active: 'failed', sub: 'failed', result: 'start-limit-hit', main: undefined, monitor: undefined });
      return;
    }
    updateState(name, { active: 'activating', sub: 'start-pre', invocation, monitor: me, main: undefined, nRestarts });
    let env;
    let how;
    try {
      env = unitEnvironment(def, invocation);
    } catch (err) {
      how = { code: 1, signal: null, error: err };
    }
    for (const cmd of how ? [] : def.execStartPre) {
      const r = await spawnCommand(name, def, cmd, env, false);
      const pre = r.child ? await exited(r.child) : { code: 203, signal: null };
      if ((pre.code !== 0 || pre.signal) && !cmd.ignoreFailure) {
        how = { ...pre, error: 'start-pre' };
        updateState(name, { startFailed: true });
        break;
      }
      if (stopping) break;
    }
    if (!how && !stopping) {
      if (def.type === 'oneshot') {
        for (const cmd of def.execStart) {
          const r = await spawnCommand(name, def, cmd, env, true);
          how = r.child ? await exited(r.child) : { code: 203, signal: null, error: r.error };
          if ((how.code !== 0 || how.signal) && !cmd.ignoreFailure) break;
          how = { code: 0, signal: null };
        }
        if (how?.code === 0 && !how.signal) {
          updateState(name, def.remainAfterExit ? { active: 'active', sub: 'exited', result: 'success', main: undefined, monitor: undefined, remainAfterExit: true } : { active: 'inactive', sub: 'dead', result: 'success', main: undefined, monitor: undefined });
          return;
        }
      } else {
        const r = await spawnCommand(name, def, def.execStart[0], env, true);
        if (!r.child) {
          how = { code: 203, signal: null, error: r.error };
          // Type=simple counts as started once forked; exec and notify wait for the exec to work.
          if (def.type !== 'simple' && def.type !== 'idle') updateState(name, { startFailed: true });
        }
        else {
          current = { pid: r.pid, start: r.start };
          updateState(name, { active: 'active', sub: 'running', main: current, since: Date.now(), execMainStatus: undefined });
          managerSays(name, `Started ${def.description}.`);
          if (stopping) void stopMain(current);
          how = await exited(r.child);
          current = undefined;
          if (!stopping) managerSays(name, `${name}: Main process exited, ${exitText(how)}`);
        }
      }
    }
    const failed = !!how && (how.error !== undefined || (how.signal ? !CLEAN_SIGNALS.includes(how.signal) : how.code !== 0));
    const status = how ? { execMainStatus: how.signal ?? how.code } : {};
    if (stopping || !how) {
      updateState(name, { active: 'inactive', sub: 'dead', result: 'success', main: undefined, monitor: undefined, ...status });
      managerSays(name, `Stopped ${def.description}.`);
      return;
    }
    const result = failed ? (how.signal ? 'signal' : 'exit-code') : 'success';
    if (failed) managerSays(name, `${name}: Failed with result '${result}'.`);
    if (!shallRestart(def.restart, how)) {
      updateState(name, { active: failed ? 'failed' : 'inactive', sub: failed ? 'failed' : 'dead', result, main: undefined, monitor: undefined, ...status });
      return;
    }
    updateState(name, { active: 'activating', sub: 'auto-restart', main: undefined, ...status });
    await new Promise((res) => {
      wake = res;
      setTimeout(res, def.restartMs);
    });
    if (stopping) {
      updateState(name, { active: 'inactive', sub: 'dead', result: 'success', main: undefined, monitor: undefined });
      return;
    }
    nRestarts++;
    managerSays(name, `${name}: Scheduled restart job, restart counter is at ${nRestarts}.`);
  }
}

// ---------------------------------------------------------------------------------------------
// systemctl

/** Ends the command with an exit code (and a message), after locks are released. */
class Exit extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

function fail(message, code = 1) {
  throw new Exit(code, message);
}

function loadedOrFail(name, verb) {
  const def = heldDefinition(name);
  if (def.loadState === 'loaded') return def;
  if (def.loadState === 'not-found') fail(`Failed to ${verb} ${name}: Unit ${name} not found.`, 5);
  if (def.loadState === 'masked') fail(`Failed to ${verb} ${name}: Unit ${name} is masked.`, 1);
  fail(`${def.error}\nFailed to ${verb} ${name}: Unit ${name} has a bad unit file setting.`, 1);
}

function warnIfChanged(def) {
  if (changedOnDisk(def)) process.stderr.write(`Warning: The unit file, source configuration file or drop-ins of ${def.id} changed on disk. Run 'systemctl daemon-reload' to reload units.\n`);
}

function startUnit(name, held) {
  withLock(name, () => {
    const def = held ?? loadedOrFail(name, 'start');
    warnIfChanged(def);
    const s = liveState(name);
    if (s.active === 'active' || (s.active === 'activating' && alive(s.monitor))) return;
    writeAtomic(join(unitDir(name), 'loaded.json'), JSON.stringify(def));
    const invocation = randomBytes(16).toString('hex');
    updateState(name, { active: 'activating', sub: 'start-pre', invocation, result: 'success', nRestarts: 0, main: undefined, monitor: undefined, startFailed: false });
    const m = spawn(process.execPath, [SELF, '__monitor', name, invocation], { detached: true, stdio: 'ignore', cwd: '/' });
    m.unref();
    // Like systemd, wait for the start job: ExecStartPre= done and the main process spawned (or failed).
    const deadline = Date.now() + Math.min(def.timeoutStartMs, 600_000);
    while (Date.now() < deadline) {
      const now = readState(name);
      if (now.invocation === invocation && (now.startFailed || now.active === 'active' || now.active === 'inactive' || now.active === 'failed' || now.sub === 'auto-restart')) {
        if (now.startFailed || (now.active === 'failed' && def.type === 'oneshot')) {
          fail(`Job for ${name} failed because the control process exited with error code.\nSee "systemctl status ${name}" and "journalctl -xeu ${name}" for details.`);
        }
        return;
      }
      sleepMs(20);
    }
    fail(`Job for ${name} failed because a timeout was exceeded.`);
  });
}

function stopUnit(name) {
  withLock(name, () => {
    const s = readState(name);
    const def = existsSync(join(unitDir(name), 'loaded.json')) ? JSON.parse(readFileSync(join(unitDir(name), 'loaded.json'), 'utf8')) : loadUnit(name);
    if (def.loadState === 'not-found' && !s.main) fail(`Failed to stop ${name}: Unit ${name} not loaded.`, 5);
    if (alive(s.monitor)) {
      process.kill(s.monitor.pid, 'SIGTERM');
      const deadline = Date.now() + Math.min(def.timeoutStopMs ?? 90_000, 90_000) + 5000;
      while (alive(s.monitor) && Date.now() < deadline) sleepMs(20);
    }
    // No monitor (it was killed): the main process by its recorded PID, as systemd would.
    const main = readState(name).main ?? s.main;
    if (alive(main)) {
      killMain(def, main, def.killSignal ?? 'SIGTERM');
      const deadline = Date.now() + Math.min(def.timeoutStopMs ?? 90_000, 90_000);
      while (alive(main) && Date.now() < deadline) sleepMs(20);
      killMain(def, main, 'SIGKILL');
    }
    if (alive(s.monitor)) process.kill(s.monitor.pid, 'SIGKILL');
    updateState(name, { active: 'inactive', sub: 'dead', result: 'success', main: undefined, monitor: undefined, remainAfterExit: false });
  });
}

function enableUnit(name) {
  const def = loadUnit(name);
  if (def.loadState === 'not-found') fail(`Failed to enable unit: Unit file ${name} does not exist.`);
  if (def.loadState === 'masked') fail(`Failed to enable unit: Unit file ${name} is masked.`);
  const targets = [...def.wantedBy.map((t) => `${t}.wants`), ...def.requiredBy.map((t) => `${t}.requires`)];
  if (!targets.length) {
    process.stderr.write(`The unit files have no installation config (WantedBy=, RequiredBy=, Also=,\nAlias= settings in the [Install] section, and DefaultInstance= for template\nunits). This means they are not meant to be enabled or disabled using systemctl.\n`);
    return;
  }
  for (const t of targets) {
    const link = join('/etc/systemd/system', t, name);
    if (isSymlink(link)) continue;
    mkdirSync(dirname(link), { recursive: true });
    symlinkSync(def.fragment, link);
    process.stderr.write(`Created symlink ${link} → ${def.fragment}.\n`);
  }
}

function disableUnit(name) {
  for (const link of wantsLinks(name)) {
    unlinkSync(link);
    process.stderr.write(`Removed "${link}".\n`);
  }
}

function daemonReload() {
  if (!existsSync(RUN)) return;
  for (const u of readdirSync(RUN)) if (existsSync(join(RUN, u, 'loaded.json'))) reloadDefinition(u);
}

function formatExec(cmd, main) {
  return `{ path=${cmd.path} ; argv[]=${cmd.argv.join(' ')} ; ignore_errors=${cmd.ignoreFailure ? 'yes' : 'no'} ; start_time=[n/a] ; stop_time=[n/a] ; pid=${main?.pid ?? 0} ; code=(null) ; status=0/0 }`;
}

function properties(name) {
  const def = heldDefinition(name);
  const s = liveState(name);
  const main = s.active === 'active' && alive(s.main) ? s.main : undefined;
  const props = [
    ['Type', def.type ?? 'simple'],
    ['Restart', def.restart ?? 'no'],
    ['MainPID', String(main?.pid ?? 0)],
    ['ExecMainPID', String(main?.pid ?? 0)],
    ['ExecMainStatus', String(typeof s.execMainStatus === 'number' ? s.execMainStatus : 0)],
    ['NRestarts', String(s.nRestarts ?? 0)],
    ['Id', def.id],
    ['Description', def.description ?? def.id],
    ['LoadState', def.loadState],
    ['ActiveState', s.active],
    ['SubState', s.sub],
    ['Result', s.result ?? 'success'],
    ['FragmentPath', def.fragment ?? ''],
    ['DropInPaths', (def.dropins ?? []).join(' ')],
    ['UnitFileState', enabledState(def.id) ?? ''],
    ['NeedDaemonReload', changedOnDisk(def) ? 'yes' : 'no'],
    ['InvocationID', s.invocation ?? ''],
    ['KillMode', def.killMode ?? 'control-group'],
    ['Environment', (def.environment ?? []).join(' ')],
    ['EnvironmentFiles', (def.environmentFiles ?? []).map((f) => `${f.path} (ignore_errors=${f.optional ? 'yes' : 'no'})`).join(' ')],
  ];
  for (const [key, k] of [['ExecStartPre', 'execStartPre'], ['ExecStart', 'execStart'], ['ExecStartPost', 'execStartPost'], ['ExecStop', 'execStop']]) {
    for (const cmd of def[k] ?? []) props.push([key, formatExec(cmd, key === 'ExecStart' ? main : undefined)]);
  }
  return props;
}

function statusText(name) {
  const def = heldDefinition(name);
  const s = liveState(name);
  const since = s.since ? ` since ${new Date(s.since).toUTCString()}` : '';
  const lines = [
    `● ${def.id} - ${def.description ?? def.id}`,
    `     Loaded: ${def.loadState}${def.fragment ? ` (${def.fragment}; ${enabledState(def.id)})` : ''}`,
    ...(def.dropins?.length ? [`    Drop-In: ${def.dropins.join(', ')}`] : []),
    `     Active: ${s.active} (${s.sub})${s.active === 'active' ? since : ''}`,
    ...(s.main && s.active === 'active' ? [`   Main PID: ${s.main.pid}`] : []),
  ];
  return `${lines.join('\n')}\n`;
}

function catUnit(name) {
  const files = findUnitFiles(name);
  if (!files.fragment) fail(`No files found for ${name}.`);
  return [files.fragment, ...files.dropins].map((f) => `# ${f}\n${readFileSync(f, 'utf8')}`).join('\n');
}

function exitWith(code) {
  throw new Exit(code);
}

function systemctl(args) {
  mkdirSync(dirname(CALLS), { recursive: true });
  writeFileSync(CALLS, `${args.join(' ')}\n`, { flag: 'a' });
  const opts = { now: false, quiet: false, value: false, props: [], signal: 'SIGTERM' };
  const rest = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === '--now') opts.now = true;
    else if (a === '-q' || a === '--quiet') opts.quiet = true;
    else if (a === '--value') opts.value = true;
    else if (a === '-p' || a === '--property') opts.props.push(...args[++i].split(','));
    else if (a.startsWith('--property=')) opts.props.push(...a.slice(11).split(','));
    else if (a === '-s' || a === '--signal') opts.signal = args[++i];
    else if (a.startsWith('--signal=')) opts.signal = a.slice(9);
    else if (['--no-pager', '--no-block', '--system', '--full', '-l', '--no-legend', '--no-ask-password'].includes(a)) continue;
    else if (a.startsWith('-')) fail(`systemctl: unrecognized option '${a}' (stand-in)`);
    else rest.push(a);
  }
  const [cmd, ...names] = rest;
  const units = names.map(canonicalName);
  const needUnits = () => units.length || fail(`Too few arguments.`);
  switch (cmd) {
    case 'daemon-reload':
      return daemonReload();
    case 'start':
      needUnits();
      return units.forEach((u) => startUnit(u));
    case 'stop':
      needUnits();
      return units.forEach((u) => stopUnit(u));
    case 'restart':
    case 'reload-or-restart':
      needUnits();
      for (const u of units) {
        // The definition systemd holds (a changed file needs daemon-reload first).
        const def = loadedOrFail(u, 'restart');
        stopUnit(u);
        startUnit(u, def);
      }
      return;
    case 'try-restart':
      for (const u of units) {
        if (liveState(u).active !== 'active') continue;
        stopUnit(u);
        startUnit(u);
      }
      return;
    case 'enable':
      needUnits();
      units.forEach((u) => enableUnit(u));
      daemonReload();
      if (opts.now) units.forEach((u) => startUnit(u));
      return;
    case 'disable':
      needUnits();
      units.forEach((u) => disableUnit(u));
      daemonReload();
      if (opts.now) units.forEach((u) => stopUnit(u));
      return;
    case 'is-active': {
      needUnits();
      const states = units.map((u) => liveState(u).active);
      if (!opts.quiet) process.stdout.write(states.map((s) => `${s}\n`).join(''));
      exitWith(states.includes('active') ? 0 : 3);
    }
    case 'is-failed': {
      needUnits();
      const states = units.map((u) => liveState(u).active);
      if (!opts.quiet) process.stdout.write(states.map((s) => `${s}\n`).join(''));
      exitWith(states.includes('failed') ? 0 : 1);
    }
    case 'is-enabled': {
      needUnits();
      let ok = false;
      for (const u of units) {
        const s = enabledState(u);
        if (s === undefined) fail(`Failed to get unit file state for ${u}: No such file or directory`);
        if (!opts.quiet) process.stdout.write(`${s}\n`);
        ok ||= s === 'enabled' || s === 'static';
      }
      exitWith(ok ? 0 : 1);
    }
    case 'show': {
      needUnits();
      const blocks = units.map((u) => {
        const props = properties(u).filter(([k]) => !opts.props.length || opts.props.includes(k));
        return props.map(([k, v]) => (opts.value ? v : `${k}=${v}`)).join('\n');
      });
      process.stdout.write(`${blocks.join('\n\n')}\n`);
      return;
    }
    case 'status': {
      needUnits();
      let code = 0;
      for (const u of units) {
        const def = heldDefinition(u);
        if (def.loadState === 'not-found') {
          process.stderr.write(`Unit ${u} could not be found.\n`);
          code = 4;
          continue;
        }
        process.stdout.write(statusText(u));
        if (liveState(u).active !== 'active' && code === 0) code = 3;
      }
      exitWith(code);
    }
    case 'cat':
      needUnits();
      process.stdout.write(units.map(catUnit).join('\n'));
      return;
    case 'kill':
      needUnits();
      for (const u of units) {
        const s = liveState(u);
        if (s.main && alive(s.main)) process.kill(s.main.pid, opts.signal.startsWith('SIG') ? opts.signal : `SIG${opts.signal}`);
      }
      return;
    case 'reset-failed':
      for (const u of units) if (liveState(u).active === 'failed') updateState(u, { active: 'inactive', sub: 'dead', result: 'success' });
      return;
    default:
      fail(`systemctl stand-in: unsupported command ${cmd}`);
  }
}

// ---------------------------------------------------------------------------------------------
// journalctl

/** Entries of the per-unit journal: each process's output, in the order the processes started. */
function journalctl(args) {
  const units = [];
  const pids = [];
  let output = 'short';
  let lines;
  let quiet = false;
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === '-u' || a === '--unit') units.push(canonicalName(args[++i]));
    else if (a.startsWith('--unit=')) units.push(canonicalName(a.slice(7)));
    else if (a.startsWith('_SYSTEMD_UNIT=')) units.push(canonicalName(a.slice(14)));
    else if (a.startsWith('_PID=')) pids.push(a.slice(5));
    else if (a === '-o' || a === '--output') output = args[++i];
    else if (a.startsWith('--output=')) output = a.slice(9);
    else if (a === '-n' || a === '--lines') lines = Number(args[++i]);
    else if (a.startsWith('--lines=')) lines = Number(a.slice(8));
    else if (a === '-q' || a === '--quiet') quiet = true;
    else if (['--no-pager', '-b', '--boot', '-x', '--catalog', '-e', '--pager-end', '--no-hostname'].includes(a)) continue;
    else fail(`journalctl stand-in: unsupported argument ${a}`);
  }
  if (!['short', 'cat'].includes(output)) fail(`journalctl stand-in: unsupported output mode ${output}`);
  const all = existsSync(JOURNAL) ? readdirSync(JOURNAL) : [];
  const entries = [];
  for (const u of units.length ? units : all) {
    const dir = join(JOURNAL, u);
    if (!existsSync(dir)) continue;
    for (const f of readdirSync(dir)) {
      const m = /^(\d+)-(\d+)\.log$/.exec(f);
      if (!m || (pids.length && !pids.includes(m[2]))) continue;
      entries.push({ unit: u, startMs: Number(m[1]), pid: m[2], file: join(dir, f) });
    }
  }
  entries.sort((a, b) => a.startMs - b.startMs);
  let out = [];
  for (const e of entries) {
    const text = readFileSync(e.file, 'utf8');
    const when = new Date(e.startMs).toLocaleString('en-US', { month: 'short', day: '2-digit', hour: '2-digit', minute: '2-digit', second: '2-digit', hour12: false }).replace(',', '');
    for (const l of text.split('\n').slice(0, text.endsWith('\n') ? -1 : undefined)) out.push(output === 'cat' ? l : `${when} ${hostname()} ${unitNameParts(e.unit).stem}[${e.pid}]: ${l}`);
  }
  if (lines !== undefined) out = out.slice(-lines);
  if (!out.length && !quiet && output !== 'cat') process.stdout.write('-- No entries --\n');
  if (out.length) process.stdout.write(`${out.join('\n')}\n`);
}

// ---------------------------------------------------------------------------------------------

const isMain = process.argv[1] && safeRealpath(process.argv[1]) === safeRealpath(SELF);
if (isMain) {
  const [verb, ...rest] = process.argv.slice(2);
  try {
    if (verb === 'systemctl') systemctl(rest);
    else if (verb === 'journalctl') journalctl(rest);
    else if (verb === '__monitor') await monitor(rest[0], rest[1]);
    else fail(`usage: systemd.mjs systemctl|journalctl ARGS`);
  } catch (err) {
    if (err instanceof Exit) {
      if (err.message) process.stderr.write(`${err.message}\n`);
      process.exitCode = err.code;
    } else if (err instanceof UnitError) {
      process.stderr.write(`${err.message}\n`);
      process.exitCode = 1;
    } else throw err;
  }
}
