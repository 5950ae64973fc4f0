// The ICN gateway client: log in with a device key, call the API with
// types generated from its OpenAPI document, and follow a co-op's events.

import createFetchClient, { type Client as FetchClient } from "openapi-fetch";
import type { components, paths } from "./schema.js";

/** A response body the OpenAPI document names. */
export type Schema<N extends keyof components["schemas"]> = components["schemas"][N];
import type { Signer } from "./signer.js";

/** An error the gateway answered: `{error, message}` with its status. */
export class IcnError extends Error {
  constructor(
    readonly status: number,
    readonly error: string,
    message: string,
  ) {
    super(`${status} ${error}: ${message}`);
    this.name = "IcnError";
  }
}

/** A logged-in session: the token and what it stands for. */
export interface Session {
  token: string;
  did: string;
  device: string | null;
  scopes: string[];
  /** Unix seconds. */
  expiresAt: number;
}

/** How to log in. */
export interface AuthOptions {
  /** Log in for this member with a device key registered to it. */
  member?: string;
  /** Fewer scopes than all. */
  scopes?: string[];
}

/** The constructor of a WebSocket: the browser's, or `ws` in Node 20. */
export type WebSocketCtor = new (url: string) => WebSocketLike;

/** What the client uses of a WebSocket. */
export interface WebSocketLike {
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: unknown) => void) | null;
  onerror: ((ev: unknown) => void) | null;
  send(data: string): void;
  close(): void;
}

export interface ClientOptions {
  /** The gateway, e.g. `http://127.0.0.1:8080`. */
  baseUrl: string;
  /** `fetch` to use (the global one by default). */
  fetch?: typeof fetch;
  /** WebSocket constructor (the global one by default). */
  WebSocket?: WebSocketCtor;
  /** Log in again this many seconds before the token expires (60). */
  refreshMarginSeconds?: number;
}

/** One event of a co-op's stream. */
export interface IcnEvent {
  seq: number;
  event: string;
  at: number;
  coop_doc_id?: string;
  data: Record<string, unknown>;
}

export interface SubscribeHandlers {
  /** Each event once, in `seq` order. */
  onEvent(event: IcnEvent): void;
  /** `open` (authenticated), `reconnecting`, `closed`. */
  onState?(state: "open" | "reconnecting" | "closed"): void;
  /** A refusal or a failure; with `autoReconnect` the client goes on. */
  onError?(error: Error): void;
}

export interface SubscribeOptions {
  /** Reconnect when the socket drops (true). */
  autoReconnect?: boolean;
  /** After connecting, fetch what was missed since the last `seq` seen (true). */
  autoBackfill?: boolean;
  /** When a `seq` is skipped, fetch the missing events before going on (true). */
  gapDetection?: boolean;
  /** Start after this `seq` (0: only new events unless backfilling from 0). */
  afterSeq?: number;
}

export interface Subscription {
  /** The last `seq` delivered. */
  readonly lastSeq: number;
  /** Drops the socket as a network failure would (it reconnects if asked to). */
  drop(): void;
  /** Stops for good. */
  close(): void;
}

function bytesToBase64(bytes: Uint8Array): string {
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s);
}

export class IcnClient {
  /** Typed calls on every route: `client.api.GET("/v1/coops/{id}", {params: {path: {id}}})`. */
  readonly api: FetchClient<paths>;
  private session: Session | null = null;
  private signer: Signer | null = null;
  private auth: AuthOptions = {};
  private refreshing: Promise<Session> | null = null;
  private readonly margin: number;

  constructor(private readonly options: ClientOptions) {
    this.margin = options.refreshMarginSeconds ?? 60;
    this.api = createFetchClient<paths>({
      baseUrl: options.baseUrl,
      fetch: options.fetch,
    });
    this.api.use({
      onRequest: async ({ request }) => {
        if (this.signer && !new URL(request.url).pathname.startsWith("/v1/auth/")) {
          const session = await this.fresh();
          request.headers.set("Authorization", `Bearer ${session.token}`);
        }
        return request;
      },
    });
  }

  /** The current session, if logged in. */
  get current(): Session | null {
    return this.session;
  }

  /**
   * Logs in with `signer`: asks the gateway for a challenge (the delegation
   * statement), signs it, and exchanges it for a token. The token is
   * renewed the same way before it expires.
   */
  async authenticate(signer: Signer, options: AuthOptions = {}): Promise<Session> {
    this.signer = signer;
    this.auth = options;
    return this.login();
  }

  private async login(): Promise<Session> {
    const signer = this.signer;
    if (!signer) throw new Error("authenticate first");
    const did = this.auth.member ?? signer.did;
    const device = this.auth.member ? signer.did : undefined;
    const challenge = await this.call<{ challenge: string }>("POST", "/v1/auth/challenge", {
      did,
      ...(device ? { device } : {}),
      ...(this.auth.scopes ? { scopes: this.auth.scopes } : {}),
    });
    const signature = await signer.sign(new TextEncoder().encode(challenge.challenge));
    const verified = await this.call<{
      token: string;
      did: string;
      device?: string | null;
      scopes: string[];
      expires_at: string;
    }>("POST", "/v1/auth/verify", {
      did,
      challenge: challenge.challenge,
      signature: bytesToBase64(signature),
    });
    this.session = {
      token: verified.token,
      did: verified.did,
      device: verified.device ?? null,
      scopes: verified.scopes,
      expiresAt: Math.floor(Date.parse(verified.expires_at) / 1000),
    };
    return this.session;
  }

  /** The session, logged in again first when it is about to expire. */
  private async fresh(): Promise<Session> {
    const now = Date.now() / 1000;
    if (this.session && this.session.expiresAt - now > this.margin) return this.session;
    this.refreshing ??= this.login().finally(() => {
      this.refreshing = null;
    });
    return this.refreshing;
  }

  /**
   * One request, answered as JSON; an error answer throws [`IcnError`].
   * Writes may carry an `Idempotency-Key`: sent again, they write once.
   */
  async call<T = unknown>(
    method: string,
    path: string,
    body?: unknown,
    options: { idempotencyKey?: string } = {},
  ): Promise<T> {
    const headers: Record<string, string> = {};
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (options.idempotencyKey) headers["Idempotency-Key"] = options.idempotencyKey;
    if (this.signer && !path.startsWith("/v1/auth/")) {
      headers["Authorization"] = `Bearer ${(await this.fresh()).token}`;
    }
    const doFetch = this.options.fetch ?? fetch;
    const response = await doFetch(new URL(path, this.options.baseUrl), {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await response.text();
    const json = text ? JSON.parse(text) : null;
    if (!response.ok) {
      throw new IcnError(response.status, json?.error ?? response.statusText, json?.message ?? text);
    }
    return json as T;
  }

  /**
   * Every item of a list route (`{items, next_cursor}`), page after page:
   * `for await (const m of client.items("/v1/coops/food-coop/members")) …`.
   */
  async *items<T = unknown>(path: string, options: { limit?: number } = {}): AsyncGenerator<T> {
    let cursor: string | null = null;
    do {
      const url = new URL(path, "http://x");
      if (options.limit) url.searchParams.set("limit", String(options.limit));
      if (cursor !== null) url.searchParams.set("cursor", cursor);
      const page: { items: T[]; next_cursor: string | null } = await this.call("GET", url.pathname + url.search);
      yield* page.items;
      cursor = page.next_cursor;
    } while (cursor !== null);
  }

  /** Pays `amount` of `unit` to `to` from the logged-in member. */
  settle(
    coop: string,
    settle: { to: string; amount: number; unit: string; memo?: string },
    options: { idempotencyKey?: string } = {},
  ) {
    return this.call<Schema<"SettleAnswer">>(
      "POST",
      `/v1/ledger/${encodeURIComponent(coop)}/settle`,
      settle,
      options,
    );
  }

  /** A member's balance, limit and available amount in every unit. */
  position(coop: string, did: string) {
    return this.call<Schema<"PositionAnswer">>(
      "GET",
      `/v1/ledger/${encodeURIComponent(coop)}/position/${did}`,
    );
  }

  /**
   * Follows `coop`'s events over the WebSocket: each once, in order,
   * resuming from the last `seq` seen after a drop, and fetching any it
   * missed.
   */
  subscribe(coop: string, handlers: SubscribeHandlers, options: SubscribeOptions = {}): Subscription {
    const autoReconnect = options.autoReconnect ?? true;
    const autoBackfill = options.autoBackfill ?? true;
    const gapDetection = options.gapDetection ?? true;
    const Ctor = this.options.WebSocket ?? (globalThis as { WebSocket?: WebSocketCtor }).WebSocket;
    if (!Ctor) throw new Error("no WebSocket: pass one in the client's options (the `ws` package in Node 20)");
    const url = new URL(`/v1/ws/${encodeURIComponent(coop)}`, this.options.baseUrl);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    let lastSeq = options.afterSeq ?? -1;
    let socket: WebSocketLike | null = null;
    let closed = false;
    let backfilling = false;
    let held: IcnEvent[] = [];
    let delay = 250;

    const deliver = (e: IcnEvent) => {
      if (e.seq <= lastSeq) return; // seen already
      lastSeq = e.seq;
      handlers.onEvent(e);
    };
    const backfill = (s: WebSocketLike) => {
      backfilling = true;
      s.send(JSON.stringify({ type: "Backfill", after_seq: Math.max(lastSeq, 0) }));
    };
    const connect = () => {
      const s = new Ctor(url.toString());
      socket = s;
      s.onopen = async () => {
        try {
          const session = await this.fresh();
          s.send(JSON.stringify({ type: "Auth", token: session.token }));
        } catch (e) {
          handlers.onError?.(e as Error);
          s.close();
        }
      };
      s.onmessage = (ev) => {
        const msg = JSON.parse(String(ev.data));
        switch (msg.type) {
          case "AuthOk":
            delay = 250;
            handlers.onState?.("open");
            if (lastSeq < 0) lastSeq = msg.last_seq; // new events only
            else if (autoBackfill && msg.last_seq > lastSeq) backfill(s);
            break;
          case "AuthError":
            handlers.onError?.(new IcnError(401, "AuthError", msg.message));
            break;
          case "Event": {
            const e = msg as IcnEvent;
            if (backfilling) {
              held.push(e);
            } else if (gapDetection && lastSeq >= 0 && e.seq > lastSeq + 1) {
              held.push(e);
              backfill(s);
            } else {
              deliver(e);
            }
            break;
          }
          case "BackfillDone":
            if (msg.more) {
              s.send(JSON.stringify({ type: "Backfill", after_seq: lastSeq }));
              break;
            }
            backfilling = false;
            held.sort((a, b) => a.seq - b.seq);
            for (const e of held) deliver(e);
            held = [];
            break;
          case "Error":
            handlers.onError?.(new Error(msg.message ?? "the server refused a message"));
            break;
        }
      };
      s.onerror = () => {};
      s.onclose = () => {
        backfilling = false;
        if (closed || !autoReconnect) {
          handlers.onState?.("closed");
          return;
        }
        handlers.onState?.("reconnecting");
        setTimeout(connect, delay);
        delay = Math.min(delay * 2, 5000);
      };
    };
    connect();
    return {
      get lastSeq() {
        return lastSeq;
      },
      drop() {
        socket?.close();
      },
      close() {
        closed = true;
        socket?.close();
      },
    };
  }
}

/** A client of the gateway at `options.baseUrl`. */
export function createClient(options: ClientOptions): IcnClient {
  return new IcnClient(options);
}
