import { describe, expect, it } from 'vitest';
import { mayReceiveCredentials } from '../../oci/auth.js';

/** Which token realms get a registry's basic credentials: the cases the integration tests cannot reach from 127.0.0.1. */
describe('mayReceiveCredentials', () => {
  const may = (realm: string, base: string, host: string, configured?: string[]) => mayReceiveCredentials(new URL(realm), new URL(base), host, configured);

  it('a realm on the registry\'s host and effective port', () => {
    expect(may('https://registry.example/token', 'https://registry.example', 'registry.example')).toBe(true);
    expect(may('https://registry.example:443/token', 'https://registry.example', 'registry.example')).toBe(true);
    expect(may('http://10.0.0.5:5000/auth', 'http://10.0.0.5:5000', '10.0.0.5:5000')).toBe(true);
  });

  it('not another port, another scheme\'s port or another host', () => {
    expect(may('https://registry.example:8443/token', 'https://registry.example', 'registry.example')).toBe(false);
    expect(may('http://registry.example/token', 'https://registry.example', 'registry.example')).toBe(false);
    expect(may('https://evil.example/token', 'https://registry.example', 'registry.example')).toBe(false);
    expect(may('https://registry.example.evil.example/token', 'https://registry.example', 'registry.example')).toBe(false);
  });

  it('Docker Hub\'s auth.docker.io for docker.io only', () => {
    expect(may('https://auth.docker.io/token', 'https://registry-1.docker.io', 'docker.io')).toBe(true);
    expect(may('https://auth.docker.io/token', 'https://registry.example', 'registry.example')).toBe(false);
  });

  it('a host the user listed, with or without its default port', () => {
    expect(may('https://gitlab.example/jwt/auth', 'https://registry.gitlab.example', 'registry.gitlab.example', ['gitlab.example'])).toBe(true);
    expect(may('https://gitlab.example/jwt/auth', 'https://registry.gitlab.example', 'registry.gitlab.example', ['GitLab.example:443'])).toBe(true);
    expect(may('https://gitlab.example:8443/jwt/auth', 'https://registry.gitlab.example', 'registry.gitlab.example', ['gitlab.example'])).toBe(false);
  });
});
