// Payments a device signs while it cannot reach a node, spent from its
// allowance so that no other key of its member can make them conflicted,
// kept until the node is reachable and submitted then, each once.

import type { IcnClient, Schema } from "./client.js";
import { IcnError } from "./client.js";
import { signEntry, toHex } from "./entry.js";
import type { Signer } from "./signer.js";

/** One queued payment and where it stands. */
export interface Queued {
  /** The entry's id (hex): also its idempotency key. */
  id: string;
  coop: string;
  to: string;
  amount: number;
  unit: string;
  memo: string;
  /** The canonical signed entry, hex. */
  bytes: string;
  /** `queued` until submitted; then `applied`, `conflicted` (with `reason`),
   * `waiting` (the node lacks what it cites, and counts it when that arrives)
   * or `refused` (with `reason`; nothing stored). */
  state: "queued" | "applied" | "conflicted" | "waiting" | "refused";
  reason?: string;
}

/** Where the queue keeps its payments: memory by default, IndexedDB or a file in an app. */
export interface QueueStore {
  load(): Promise<Queued[]>;
  save(items: Queued[]): Promise<void>;
}

/** A store that lasts as long as the page. */
export function memoryStore(): QueueStore {
  let items: Queued[] = [];
  return {
    async load() {
      return items.map((i) => ({ ...i }));
    },
    async save(next) {
      items = next.map((i) => ({ ...i }));
    },
  };
}

/** What the queue learned from the node while it was reachable. */
interface Known {
  coopDocId: string;
  coopHeads: string[];
  ledgerHeads: string[];
  /** Unspent allowance of this device, per unit, when last online. */
  allowance: Record<string, number>;
}

export interface OfflineQueueOptions {
  /** The device's key (not the member's DID key: that one spends general credit). */
  device: Signer;
  /** The member the device belongs to. */
  member: string;
  store?: QueueStore;
}

export class OfflineQueue {
  private readonly known = new Map<string, Known>();
  private readonly store: QueueStore;

  constructor(
    private readonly client: IcnClient,
    private readonly options: OfflineQueueOptions,
  ) {
    this.store = options.store ?? memoryStore();
  }

  /**
   * While online: remembers what a payment made offline cites (the co-op's
   * and the ledger's heads) and this device's allowance. Call it when the
   * node is reachable, before going offline.
   */
  async prepare(coop: string): Promise<void> {
    const heads = await this.client.call<Schema<"HeadsAnswer">>(
      "GET",
      `/v1/ledger/${encodeURIComponent(coop)}/heads`,
    );
    const position = await this.client.call<Schema<"PositionAnswer">>(
      "GET",
      `/v1/ledger/${encodeURIComponent(coop)}/position/${this.options.member}`,
    );
    const allowance: Record<string, number> = {};
    for (const p of position.positions) allowance[p.unit] = p.allowances?.[this.options.device.did] ?? 0;
    this.known.set(coop, {
      coopDocId: heads.coop_doc_id,
      coopHeads: heads.coop_heads,
      ledgerHeads: heads.ledger_heads,
      allowance,
    });
  }

  /** Every payment queued, with its state. */
  async items(): Promise<Queued[]> {
    return this.store.load();
  }

  /**
   * Signs a payment from this device's allowance, without the network,
   * and queues it. Refused (throws) beyond what is left of the allowance
   * after the payments already queued: within it, the payment cannot be
   * conflicted by anything the member's other keys do.
   */
  async pay(coop: string, payment: { to: string; amount: number; unit: string; memo?: string }): Promise<Queued> {
    const known = this.known.get(coop);
    if (!known) throw new Error(`prepare(${JSON.stringify(coop)}) while online first`);
    if (!Number.isSafeInteger(payment.amount) || payment.amount <= 0) throw new Error("a positive whole amount");
    const items = await this.store.load();
    const spent = items
      .filter((i) => i.coop === coop && i.unit === payment.unit && i.state === "queued")
      .reduce((sum, i) => sum + i.amount, 0);
    const left = (known.allowance[payment.unit] ?? 0) - spent;
    if (payment.amount > left) {
      throw new Error(`the device's allowance in ${payment.unit} has ${left} left, not ${payment.amount}`);
    }
    const { encoded, id } = await signEntry(
      {
        coop: known.coopDocId,
        parents: known.ledgerHeads,
        author: this.options.member,
        signer: this.options.device.did,
        timestamp: Date.now(),
        coop_heads: known.coopHeads,
        body: {
          type: "transfer",
          from_allowance: true,
          postings: [
            { account: this.options.member, unit: payment.unit, amount: -payment.amount },
            { account: payment.to, unit: payment.unit, amount: payment.amount },
          ],
        },
        memo: payment.memo ?? "",
      },
      this.options.device,
    );
    const item: Queued = {
      id,
      coop,
      to: payment.to,
      amount: payment.amount,
      unit: payment.unit,
      memo: payment.memo ?? "",
      bytes: toHex(encoded),
      state: "queued",
    };
    await this.store.save([...items, item]);
    return item;
  }

  /**
   * Submits every queued payment, oldest first, and records each one's
   * final state. Stops at the first network failure (the rest stay
   * queued); a retry never pays twice, since an entry is its content.
   */
  async flush(): Promise<Queued[]> {
    const items = await this.store.load();
    for (const item of items) {
      if (item.state !== "queued" && item.state !== "waiting") continue;
      try {
        const answer = await this.client.call<Schema<"SubmitAnswer">>(
          "POST",
          `/v1/ledger/${encodeURIComponent(item.coop)}/entries`,
          { bytes: item.bytes },
          { idempotencyKey: item.id },
        );
        const status = answer.status.status;
        item.state = status === "applied" ? "applied" : status === "pending" ? "waiting" : "conflicted";
        item.reason = answer.status.reason ?? undefined;
      } catch (e) {
        if (e instanceof IcnError && e.status !== 429 && e.status < 500) {
          item.state = "refused";
          item.reason = e.message;
        } else {
          break; // unreachable or busy: try again later
        }
      }
      await this.store.save(items);
    }
    await this.store.save(items);
    return items;
  }
}

/**
 * Sets `amount` of `unit` of the member's credit aside for `device`, signed
 * here by the member's DID key (`signer`; the gateway never holds it) and
 * submitted as is. The client must be logged in as that member.
 */
export async function grantAllowance(
  client: IcnClient,
  signer: Signer,
  coop: string,
  grant: { device: string; unit: string; amount: number },
): Promise<Schema<"SubmitAnswer">> {
  const heads = await client.call<Schema<"HeadsAnswer">>("GET", `/v1/ledger/${encodeURIComponent(coop)}/heads`);
  const { encoded, id } = await signEntry(
    {
      coop: heads.coop_doc_id,
      parents: heads.ledger_heads,
      author: signer.did,
      signer: signer.did,
      timestamp: Date.now(),
      coop_heads: heads.coop_heads,
      body: { type: "grant", device: grant.device, unit: grant.unit, amount: grant.amount },
      memo: "allowance",
    },
    signer,
  );
  return client.call<Schema<"SubmitAnswer">>(
    "POST",
    `/v1/ledger/${encodeURIComponent(coop)}/entries`,
    { bytes: toHex(encoded) },
    { idempotencyKey: id },
  );
}
