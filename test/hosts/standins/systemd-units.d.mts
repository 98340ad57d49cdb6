// Types of systemd-units.mjs (plain JS: it runs on test hosts as it is), for the tests that use it.

export declare const SEARCH_PATH: string[];
export declare class UnitError extends Error {}

export interface ExecCommand {
  path: string;
  argv: string[];
  ignoreFailure: boolean;
  separateArgv0: boolean;
  noEnvExpand: boolean;
  privileged: boolean;
}

export interface UnitDefinition {
  id: string;
  loadState: 'loaded' | 'not-found' | 'masked' | 'bad-setting';
  error?: string;
  fragment?: string;
  dropins?: string[];
  type?: string;
  restart?: string;
  restartMs?: number;
  killMode?: string;
  environment?: string[];
  environmentFiles?: { path: string; optional: boolean }[];
  execStartPre?: ExecCommand[];
  execStart?: ExecCommand[];
  execStop?: ExecCommand[];
  wantedBy?: string[];
}

export declare function parseUnitText(text: string, file?: string): { section: string; key: string; value: string; file: string; line: number }[];
export declare function extractWords(s: string, opts?: { cunescape?: boolean; relax?: boolean }): { word: string; raw: string }[];
export declare function expandSpecifiers(text: string, unitName: string): string;
export declare function parseExec(value: string, unitName: string): ExecCommand[];
export declare function parseSec(value: string): number;
export declare function parseEnvFile(text: string): string[];
export declare function expandEnvArgv(argv: string[], env: string[]): string[];
export declare function canonicalName(name: string): string;
export declare function findUnitFiles(name: string, searchPath?: string[]): { fragment?: string; masked: boolean; dropins: string[] };
export declare function loadUnit(name: string, searchPath?: string[]): UnitDefinition;
export declare function unitEnvironment(def: UnitDefinition, invocation?: string): string[];
export declare function commandArgv(cmd: ExecCommand, env: string[]): string[];
