/**
 * Where each node takes acinstall's runtime from. The runtime is what the peer cache agent runs on,
 * so it cannot come through the agent: without this every node took its 40-odd MB from the master,
 * N copies on the master's link. Instead the registry hands it to a few nodes at a time, and every
 * node that has it (verified, kept in its agent's store, its agent answering) hands it on to a few
 * more: the copies double at each round, and the master sends about two a round, log₂N rounds.
 *
 * No I/O: `from` asks for a source before a node's peer-cache step and tells what came of it.
 */

/** Nodes taking the runtime from the registry at once. */
export const REGISTRY_SLOTS = 2;
/** Nodes one peer hands the runtime to at once. */
export const PEER_SLOTS = 2;

export interface RuntimeLease {
  /** A peer's `host:port` to take it from, or undefined: from the registry. */
  peer?: string;
  /**
   * The node's step ended. `serves`: it holds the runtime in its agent's store and its agent
   * answers on `peerAddr`, so it may hand the runtime on. `peerFailed`: the peer named did not give
   * it (gone, slow, a bad copy) and the node took it from the registry: nobody is sent there again.
   */
  done(result?: { serves: boolean; peerAddr: string; peerFailed?: boolean }): void;
}

interface Source {
  addr: string;
  serving: number;
}

export class RuntimeSources {
  /** Per arch, the nodes that may hand it on. */
  private readonly sources = new Map<string, Source[]>();
  private fromRegistry = 0;
  private readonly waiting: { arch: string; grant: (lease: RuntimeLease) => void }[] = [];

  constructor(
    private readonly registrySlots = REGISTRY_SLOTS,
    private readonly peerSlots = PEER_SLOTS,
  ) {}

  /** A source for one node of `arch`; waits until a peer or the registry has a free slot. */
  take(arch: string): Promise<RuntimeLease> {
    return new Promise((grant) => {
      this.waiting.push({ arch, grant });
      this.hand();
    });
  }

  /** Grants the waiting nodes, first come first served, what is free. */
  private hand(): void {
    for (let i = 0; i < this.waiting.length; ) {
      const lease = this.lease(this.waiting[i].arch);
      if (!lease) {
        i++;
        continue;
      }
      const [w] = this.waiting.splice(i, 1);
      w.grant(lease);
    }
  }

  private lease(arch: string): RuntimeLease | undefined {
    // The least busy peer first: a node that just got it is as good a source as the first.
    const peer = (this.sources.get(arch) ?? []).filter((s) => s.serving < this.peerSlots).sort((a, b) => a.serving - b.serving)[0];
    if (peer) {
      peer.serving++;
      return this.once(arch, () => peer.serving--, peer.addr);
    }
    if (this.fromRegistry >= this.registrySlots) return undefined;
    this.fromRegistry++;
    return this.once(arch, () => this.fromRegistry--);
  }

  private once(arch: string, release: () => void, peer?: string): RuntimeLease {
    let ended = false;
    return {
      peer,
      done: (result) => {
        if (ended) return;
        ended = true;
        release();
        if (peer && result?.peerFailed) {
          const list = this.sources.get(arch) ?? [];
          this.sources.set(arch, list.filter((s) => s.addr !== peer));
        }
        if (result?.serves) {
          const list = this.sources.get(arch) ?? [];
          if (!list.some((s) => s.addr === result.peerAddr)) list.push({ addr: result.peerAddr, serving: 0 });
          this.sources.set(arch, list);
        }
        this.hand();
      },
    };
  }
}
