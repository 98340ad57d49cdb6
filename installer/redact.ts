/** Removes join secrets (bootstrap tokens, certificate keys) from text shown or logged. */
export function redact(text: string): string {
  return text
    .replace(/(--token[\s=]+)\S+/g, '$1<redacted>')
    .replace(/(--certificate-key[\s=]+)\S+/g, '$1<redacted>')
    .replace(/\b[a-z0-9]{6}\.[a-z0-9]{16}\b/g, '<token>')
    .replace(/(Using certificate key:\s*)[a-f0-9]{64}/g, '$1<redacted>');
}
