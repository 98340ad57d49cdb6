// How systemd reads unit files, for the systemd stand-in of the test hosts (systemd.mjs beside it)
// and for tests: the unit search path, drop-ins (`<unit>.d/*.conf`, a name in a higher directory
// hides the same name below, applied in name order), line continuations, comments, `ExecStart=`
// resets, the `-@:+!` prefixes, quoting and C escapes, `%` specifiers (an unknown one is an error
// that keeps the unit from loading), Environment=, EnvironmentFile=[-], and `$VAR` / `${VAR}` /
// `$$` expansion. Read from systemd's own sources: src/shared/conf-parser.c, src/core/load-fragment.c
// (config_parse_exec), src/basic/extract-word.c, src/basic/env-util.c (replace_env_argv),
// src/basic/env-file.c, src/shared/specifier.c and src/basic/path-lookup.c.

import { existsSync, lstatSync, readdirSync, readFileSync, readlinkSync, realpathSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { hostname, release } from 'node:os';

/** systemd's unit search path for the system manager, highest priority first (path-lookup.c). */
export const SEARCH_PATH = [
  '/etc/systemd/system.control',
  '/run/systemd/system.control',
  '/run/systemd/transient',
  '/run/systemd/generator.early',
  '/etc/systemd/system',
  '/etc/systemd/system.attached',
  '/run/systemd/system',
  '/run/systemd/system.attached',
  '/run/systemd/generator',
  '/usr/local/lib/systemd/system',
  '/usr/lib/systemd/system',
  '/lib/systemd/system',
  '/run/systemd/generator.late',
];

/** What systemd puts in PATH for services (and searches for a bare executable name). */
export const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
const WHITESPACE = ' \t\n\r';

export class UnitError extends Error {}

/**
 * The assignments of one unit file, as conf-parser.c reads it: `#`/`;` comments, a trailing
 * backslash continues the line (replaced by a space), `[Section]` headers, `Key=Value` stripped.
 */
export function parseUnitText(text, file = '<text>') {
  const out = [];
  let section;
  let pending = '';
  let continuing = false;
  const lines = text.split('\n');
  for (let n = 0; n < lines.length; n++) {
    let line = lines[n].replace(/\r$/, '').trimStart();
    if (continuing && /^\s*[#;]/.test(line)) continue; // comments inside a continued line are dropped
    let escaped = false;
    for (const c of line) escaped = !escaped && c === '\\';
    if (escaped) {
      pending += `${line.slice(0, -1)} `;
      continuing = true;
      if (n < lines.length - 1) continue;
      line = '';
    }
    line = (pending + line).trim();
    pending = '';
    continuing = false;
    if (!line || line[0] === '#' || line[0] === ';') continue;
    if (line[0] === '[') {
      if (!line.endsWith(']')) throw new UnitError(`${file}:${n + 1}: invalid section header '${line}'`);
      section = line.slice(1, -1);
      continue;
    }
    const eq = line.indexOf('=');
    if (eq < 0) throw new UnitError(`${file}:${n + 1}: missing '=', ignoring line`);
    if (!section) throw new UnitError(`${file}:${n + 1}: assignment outside of section`);
    out.push({ section, key: line.slice(0, eq).trim(), value: line.slice(eq + 1).trim(), file, line: n + 1 });
  }
  return out;
}

/** cunescape_one(): the escape after a backslash; returns [text, length consumed] or undefined. */
function cunescapeOne(s, i) {
  const c = s[i];
  const simple = { a: '\x07', b: '\b', f: '\f', n: '\n', r: '\r', t: '\t', v: '\v', '\\': '\\', '"': '"', "'": "'", s: ' ' };
  if (c in simple) return [simple[c], 1];
  const hex = (len) => (new RegExp(`^[0-9a-fA-F]{${len}}$`).test(s.slice(i + 1, i + 1 + len)) ? String.fromCodePoint(parseInt(s.slice(i + 1, i + 1 + len), 16)) : undefined);
  if (c === 'x') return hex(2) === undefined ? undefined : [hex(2), 3];
  if (c === 'u') return hex(4) === undefined ? undefined : [hex(4), 5];
  if (c === 'U') return hex(8) === undefined ? undefined : [hex(8), 9];
  if (/^[0-7]{3}$/.test(s.slice(i, i + 3))) return [String.fromCharCode(parseInt(s.slice(i, i + 3), 8)), 3];
  return undefined;
}

/**
 * extract_first_word() with EXTRACT_UNQUOTE|EXTRACT_CUNESCAPE: whitespace separates words, quotes
 * anywhere in a word group, backslash escapes work inside and outside quotes; an unknown escape is
 * kept verbatim (systemd's relaxed retry), an unbalanced quote is an error. Returns the words and
 * where each ended, so a caller can stop at a `;`.
 */
export function extractWords(s, { cunescape = true, relax = false } = {}) {
  const words = [];
  let i = 0;
  while (i < s.length) {
    while (i < s.length && WHITESPACE.includes(s[i])) i++;
    if (i >= s.length) break;
    const start = i;
    let w = '';
    let quote = '';
    for (; i < s.length; i++) {
      const c = s[i];
      if (c === '\\') {
        if (i + 1 >= s.length) {
          if (relax) break;
          throw new UnitError(`trailing backslash in "${s}"`);
        }
        const e = cunescape ? cunescapeOne(s, i + 1) : [s[i + 1], 1];
        if (e) {
          w += e[0];
          i += e[1];
        } else {
          w += `\\${s[i + 1]}`;
          i += 1;
        }
      } else if (quote) {
        if (c === quote) quote = '';
        else w += c;
      } else if (c === '"' || c === "'") quote = c;
      else if (WHITESPACE.includes(c)) break;
      else w += c;
    }
    if (quote && !relax) throw new UnitError(`unbalanced quoting in "${s}"`);
    words.push({ word: w, raw: s.slice(start, i) });
  }
  return words;
}

export function unitNameParts(name) {
  const dot = name.lastIndexOf('.');
  const stem = name.slice(0, dot);
  const at = stem.indexOf('@');
  return { stem, prefix: at < 0 ? stem : stem.slice(0, at), instance: at < 0 ? '' : stem.slice(at + 1) };
}

export function readTrimmed(file) {
  try {
    return readFileSync(file, 'utf8').trim();
  } catch {
    return undefined;
  }
}

/** unit_full_printf(): `%` specifiers (specifier.c, unit-printf.c). An unknown one is an error. */
export function expandSpecifiers(text, unitName) {
  const { stem, prefix, instance } = unitNameParts(unitName);
  const unescape = (s) => s.replace(/\\x([0-9a-fA-F]{2})/g, (_, h) => String.fromCharCode(parseInt(h, 16))).replace(/-/g, '/');
  const osRelease = (key) => {
    const m = new RegExp(`^${key}=(.*)$`, 'm').exec(readTrimmed('/etc/os-release') ?? '');
    return m ? m[1].replace(/^["']|["']$/g, '') : '';
  };
  const table = {
    '%': () => '%',
    n: () => unitName,
    N: () => stem,
    p: () => prefix,
    P: () => unescape(prefix),
    i: () => instance,
    I: () => unescape(instance),
    f: () => `/${unescape(instance || prefix)}`,
    j: () => prefix.split('-').pop(),
    J: () => unescape(prefix.split('-').pop()),
    t: () => '/run',
    S: () => '/var/lib',
    C: () => '/var/cache',
    L: () => '/var/log',
    E: () => '/etc',
    T: () => '/tmp',
    V: () => '/var/tmp',
    h: () => '/root',
    u: () => 'root',
    U: () => '0',
    g: () => 'root',
    G: () => '0',
    s: () => '/bin/sh',
    H: () => hostname(),
    l: () => hostname().split('.')[0],
    q: () => hostname().split('.')[0],
    v: () => release(),
    a: () => ({ x64: 'x86-64', arm64: 'arm64' })[process.arch] ?? process.arch,
    m: () => {
      const id = readTrimmed('/etc/machine-id');
      if (!id) throw new UnitError('%m: no /etc/machine-id');
      return id;
    },
    b: () => (readTrimmed('/proc/sys/kernel/random/boot_id') ?? '').replace(/-/g, ''),
    o: () => osRelease('ID'),
    w: () => osRelease('VERSION_ID'),
    B: () => osRelease('BUILD_ID'),
    W: () => osRelease('VARIANT_ID'),
    A: () => osRelease('IMAGE_VERSION'),
    M: () => osRelease('IMAGE_ID'),
  };
  let out = '';
  for (let i = 0; i < text.length; i++) {
    if (text[i] !== '%') {
      out += text[i];
      continue;
    }
    const c = text[++i];
    const f = c === undefined ? undefined : table[c];
    if (!f) throw new UnitError(`Failed to resolve unit specifiers in '${text}': Invalid slot (unknown specifier %${c ?? ''})`);
    out += f();
  }
  return out;
}

/** config_parse_exec(): one ExecStart=-like value into commands (`;` separates several). */
export function parseExec(value, unitName) {
  const commands = [];
  const words = extractWords(value);
  let i = 0;
  while (i < words.length) {
    let first = words[i++].word;
    const flags = { ignoreFailure: false, separateArgv0: false, noEnvExpand: false, privileged: false };
    for (;;) {
      if (first[0] === '-' && !flags.ignoreFailure) flags.ignoreFailure = true;
      else if (first[0] === '@' && !flags.separateArgv0) flags.separateArgv0 = true;
      else if (first[0] === ':' && !flags.noEnvExpand) flags.noEnvExpand = true;
      else if ((first[0] === '+' || first[0] === '!') && !flags.privileged) {
        flags.privileged = true;
        if (first.startsWith('!!')) first = first.slice(1);
      } else break;
      first = first.slice(1);
    }
    let path = expandSpecifiers(first, unitName);
    if (!path) throw new UnitError(`Empty path in command line: '${value}'`);
    if (path.endsWith('/')) throw new UnitError(`Executable path specifies a directory: ${path}`);
    if (!path.startsWith('/')) {
      if (path.includes('/')) throw new UnitError(`Neither a valid executable name nor an absolute path: ${path}`);
      const found = DEFAULT_PATH.split(':').map((d) => `${d}/${path}`).find((p) => existsSync(p));
      if (!found) throw new UnitError(`Executable "${path}" not found in path "${DEFAULT_PATH}"`);
      path = found;
    }
    const argv = flags.separateArgv0 ? [] : [path];
    let semicolon = false;
    while (i < words.length) {
      const { word, raw } = words[i++];
      if (raw === ';') {
        semicolon = true;
        break;
      }
      argv.push(raw === '\\;' ? ';' : expandSpecifiers(word, unitName));
    }
    if (argv.length === 0) throw new UnitError(`Empty executable name or zeroeth argument: ${value}`);
    commands.push({ path, argv, ...flags });
    if (!semicolon) break;
  }
  return commands;
}

/** parse_sec(): `5`, `100ms`, `1min 30s`, `infinity`, in milliseconds. */
export function parseSec(value) {
  if (value === 'infinity') return 2 ** 31 - 1; // no timeout (the longest a timer waits)
  const units = { us: 0.001, usec: 0.001, ms: 1, msec: 1, s: 1000, sec: 1000, second: 1000, seconds: 1000, m: 60000, min: 60000, minute: 60000, minutes: 60000, h: 3600000, hr: 3600000, hour: 3600000, hours: 3600000, d: 86400000, day: 86400000, days: 86400000 };
  let total = 0;
  const re = /\s*([\d.]+)\s*([a-z]*)/gy;
  let m;
  let consumed = 0;
  while ((m = re.exec(value))) {
    const unit = m[2] || 's';
    if (!(unit in units)) throw new UnitError(`Failed to parse time span '${value}'`);
    total += Number(m[1]) * units[unit];
    consumed = re.lastIndex;
  }
  if (consumed === 0 || value.slice(consumed).trim()) throw new UnitError(`Failed to parse time span '${value}'`);
  return total;
}

/** Environment= values: assignments split as words, C escapes and quotes removed. */
function parseEnvironmentValue(value, unitName) {
  return extractWords(value).map(({ word }) => {
    const a = expandSpecifiers(word, unitName);
    if (!/^[A-Za-z_][A-Za-z0-9_]*=/.test(a)) throw new UnitError(`Invalid environment assignment, ignoring: ${a}`);
    return a;
  });
}

/**
 * An EnvironmentFile (env-file.c): KEY=VALUE lines, `#`/`;` comments, an optional `export`, values
 * single- or double-quoted or bare (a backslash escapes the next character; in double quotes only
 * `"\`$` and newline), trailing whitespace of a bare value dropped.
 */
export function parseEnvFile(text) {
  const out = [];
  let i = 0;
  const n = text.length;
  while (i < n) {
    while (i < n && WHITESPACE.includes(text[i])) i++;
    if (i >= n) break;
    if (text[i] === '#' || text[i] === ';') {
      while (i < n && text[i] !== '\n') i++;
      continue;
    }
    let key = '';
    while (i < n && text[i] !== '=' && text[i] !== '\n') key += text[i++];
    key = key.trim().replace(/^export\s+/, '');
    if (text[i] !== '=') continue; // no assignment on this line
    i++;
    let value = '';
    let trailingSpace = '';
    while (i < n && (text[i] === ' ' || text[i] === '\t')) i++;
    while (i < n && text[i] !== '\n') {
      const c = text[i];
      if (c === "'") {
        const end = text.indexOf("'", i + 1);
        value += trailingSpace + text.slice(i + 1, end < 0 ? n : end);
        trailingSpace = '';
        i = end < 0 ? n : end + 1;
      } else if (c === '"') {
        value += trailingSpace;
        trailingSpace = '';
        i++;
        while (i < n && text[i] !== '"') {
          if (text[i] === '\\' && i + 1 < n && '"\\`$\n'.includes(text[i + 1])) {
            if (text[i + 1] !== '\n') value += text[i + 1];
            i += 2;
          } else value += text[i++];
        }
        i++;
      } else if (c === '\\' && i + 1 < n) {
        if (text[i + 1] !== '\n') value += trailingSpace + text[i + 1];
        trailingSpace = '';
        i += 2;
      } else if (c === ' ' || c === '\t') {
        trailingSpace += c;
        i++;
      } else {
        value += trailingSpace + c;
        trailingSpace = '';
        i++;
      }
    }
    if (/^[A-Za-z_][A-Za-z0-9_]*$/.test(key)) out.push(`${key}=${value}`);
  }
  return out;
}

/** replace_env_argv(): `$VAR` as a whole word splits into words; `${VAR}` and `$$` inside one. */
export function expandEnvArgv(argv, env) {
  const get = (name) => env.find((e) => e.startsWith(`${name}=`))?.slice(name.length + 1);
  const out = [];
  for (const word of argv) {
    if (word[0] === '$' && word[1] !== '{' && word[1] !== '$') {
      const name = word.slice(1);
      if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) continue; // a bad name expands to nothing
      const v = get(name);
      if (v !== undefined) out.push(...extractWords(v, { cunescape: false, relax: true }).map((w) => w.word));
      continue;
    }
    out.push(word.replace(/\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g, (all, name) => (all === '$$' ? '$' : (get(name) ?? ''))));
  }
  return out;
}

/** The name systemctl means: `containerd` is `containerd.service`. */
export function canonicalName(name) {
  return /\.(service|socket|target|timer|path|mount|device|slice|scope|swap|automount)$/.test(name) ? name : `${name}.service`;
}

/** The fragment and drop-ins of a unit as systemd finds them along SEARCH_PATH. */
export function findUnitFiles(name, searchPath = SEARCH_PATH) {
  let fragment;
  let masked = false;
  const seen = new Set();
  for (const dir of searchPath) {
    const real = safeRealpath(dir);
    if (!real || seen.has(real)) continue;
    seen.add(real);
    const p = join(dir, name);
    if (!existsSync(p) && !isSymlink(p)) continue;
    if (isSymlink(p) && readlinkSync(p) === '/dev/null') masked = true;
    else if (existsSync(p)) fragment = p;
    break;
  }
  const dropins = new Map();
  const seenD = new Set();
  for (const dir of searchPath) {
    const d = join(dir, `${name}.d`);
    const real = safeRealpath(d);
    if (!real || seenD.has(real)) continue;
    seenD.add(real);
    let names = [];
    try {
      names = readdirSync(d);
    } catch {
      continue; // not a directory
    }
    for (const f of names.filter((x) => x.endsWith('.conf')).sort()) if (!dropins.has(f)) dropins.set(f, join(d, f));
  }
  return { fragment, masked, dropins: [...dropins.keys()].sort().map((k) => dropins.get(k)) };
}

export function safeRealpath(p) {
  try {
    return realpathSync(p);
  } catch {
    return undefined;
  }
}

export function isSymlink(p) {
  try {
    return lstatSync(p).isSymbolicLink();
  } catch {
    return false;
  }
}

/** A unit's definition from its files: what `start` runs and how. Throws UnitError when it does not load. */
export function loadUnit(name, searchPath = SEARCH_PATH) {
  name = canonicalName(name);
  if (!name.endsWith('.service')) throw new UnitError(`Unit ${name}: only services are supported by this stand-in`);
  const files = findUnitFiles(name, searchPath);
  if (files.masked) return { id: name, loadState: 'masked', error: `Unit ${name} is masked.` };
  if (!files.fragment) return { id: name, loadState: 'not-found', error: `Unit ${name} not found.` };
  const def = {
    id: name,
    loadState: 'loaded',
    fragment: files.fragment,
    dropins: files.dropins,
    sources: {},
    type: 'simple',
    restart: 'no',
    restartMs: 100,
    killMode: 'control-group',
    killSignal: 'SIGTERM',
    timeoutStopMs: 90_000,
    timeoutStartMs: 90_000,
    remainAfterExit: false,
    workingDirectory: '/',
    startLimitIntervalMs: 10_000,
    startLimitBurst: 5,
    environment: [],
    environmentFiles: [],
    execStartPre: [],
    execStart: [],
    execStartPost: [],
    execStop: [],
    wantedBy: [],
    requiredBy: [],
    description: name,
  };
  const lists = { ExecStartPre: 'execStartPre', ExecStart: 'execStart', ExecStartPost: 'execStartPost', ExecStop: 'execStop' };
  const bool = (v) => /^(1|yes|y|true|t|on)$/i.test(v);
  try {
    for (const file of [files.fragment, ...files.dropins]) {
      const text = readFileSync(file, 'utf8');
      def.sources[file] = createHash('sha256').update(text).digest('hex');
      for (const { section, key, value, file: f, line } of parseUnitText(text, file)) {
        const where = `${f}:${line}`;
        try {
          if (section === 'Service' && key in lists) {
            if (!value) def[lists[key]] = [];
            else def[lists[key]].push(...parseExec(value, name));
          } else if (section === 'Service' && key === 'Environment') {
            if (!value) def.environment = [];
            else def.environment.push(...parseEnvironmentValue(value, name));
          } else if (section === 'Service' && key === 'EnvironmentFile') {
            if (!value) def.environmentFiles = [];
            else {
              const optional = value.startsWith('-');
              def.environmentFiles.push({ path: expandSpecifiers(optional ? value.slice(1) : value, name), optional });
            }
          } else if (section === 'Service' && key === 'Type') def.type = value;
          else if (section === 'Service' && key === 'Restart') def.restart = value;
          else if (section === 'Service' && key === 'RestartSec') def.restartMs = parseSec(value);
          else if (section === 'Service' && key === 'KillMode') def.killMode = value;
          else if (section === 'Service' && key === 'KillSignal') def.killSignal = value.startsWith('SIG') ? value : `SIG${value}`;
          else if (section === 'Service' && key === 'TimeoutStopSec') def.timeoutStopMs = parseSec(value);
          else if (section === 'Service' && key === 'TimeoutStartSec') def.timeoutStartMs = parseSec(value);
          else if (section === 'Service' && key === 'TimeoutSec') def.timeoutStartMs = def.timeoutStopMs = parseSec(value);
          else if (section === 'Service' && key === 'RemainAfterExit') def.remainAfterExit = bool(value);
          else if (section === 'Service' && key === 'WorkingDirectory') def.workingDirectory = expandSpecifiers(value.replace(/^-/, ''), name).replace(/^~$/, '/root');
          else if ((section === 'Unit' && key === 'StartLimitIntervalSec') || (section === 'Service' && key === 'StartLimitInterval')) def.startLimitIntervalMs = parseSec(value);
          else if ((section === 'Unit' || section === 'Service') && key === 'StartLimitBurst') def.startLimitBurst = Number(value);
          else if (section === 'Unit' && key === 'Description') def.description = value;
          else if (section === 'Install' && key === 'WantedBy') def.wantedBy = value ? [...def.wantedBy, ...value.split(/\s+/)] : [];
          else if (section === 'Install' && key === 'RequiredBy') def.requiredBy = value ? [...def.requiredBy, ...value.split(/\s+/)] : [];
        } catch (err) {
          if (err instanceof UnitError) throw new UnitError(`${where}: ${err.message}`);
          throw err;
        }
      }
    }
  } catch (err) {
    if (!(err instanceof UnitError)) throw err;
    return { ...def, loadState: 'bad-setting', error: `${err.message}\nUnit configuration has fatal error, unit ${name} will not be started.` };
  }
  if (!['simple', 'exec', 'notify', 'oneshot', 'idle', 'forking', 'dbus'].includes(def.type)) return { ...def, loadState: 'bad-setting', error: `Failed to parse service type, ignoring: ${def.type}` };
  if (['forking', 'dbus'].includes(def.type)) return { ...def, loadState: 'bad-setting', error: `Type=${def.type} is not supported by this stand-in` };
  if (def.execStart.length === 0 && def.type !== 'oneshot') return { ...def, loadState: 'bad-setting', error: `${name}: Service has no ExecStart=, ExecStop=, or SuccessAction=. Refusing.` };
  if (def.execStart.length > 1 && def.type !== 'oneshot') return { ...def, loadState: 'bad-setting', error: `${name}: Service has more than one ExecStart= setting, which is only allowed for Type=oneshot services. Refusing.` };
  return def;
}

/** The environment a unit's commands get: the manager's, then Environment=, then EnvironmentFile=. */
export function unitEnvironment(def, invocation = '0') {
  let env = [`PATH=${DEFAULT_PATH}`, 'LANG=C.UTF-8', `INVOCATION_ID=${invocation}`];
  const set = (assignment) => {
    const k = assignment.slice(0, assignment.indexOf('=') + 1);
    env = [...env.filter((e) => !e.startsWith(k)), assignment];
  };
  def.environment.forEach(set);
  for (const f of def.environmentFiles) {
    let text;
    try {
      text = readFileSync(f.path, 'utf8');
    } catch (err) {
      if (f.optional) continue;
      throw new UnitError(`Failed to load environment files: ${f.path}: ${err.code}`);
    }
    parseEnvFile(text).forEach(set);
  }
  return env;
}

/** The argv a command runs with, in `env`. */
export function commandArgv(cmd, env) {
  return cmd.noEnvExpand ? cmd.argv : expandEnvArgv(cmd.argv, env);
}
