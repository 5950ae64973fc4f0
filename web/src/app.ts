// The member wallet icnd serves at `/` (seed 002): a device key made in the
// browser, joining with an invite, balances, paying, history with each
// entry's status, proposals and votes, devices, and live updates. Built on
// @icn/client; no framework, so the first load stays small.

import {
  createClient,
  generateSigner,
  grantAllowance,
  IcnError,
  OfflineQueue,
  signerFromKeyPair,
  toHex,
  type IcnClient,
  type Queued,
  type IcnEvent,
  type Schema,
  type Signer,
  type Subscription,
} from "../../sdk/typescript/src/index.js";

type Coop = Schema<"CoopView">;
type Position = Schema<"PositionView">;
type EntryView = Schema<"EntryView">;
type Proposal = Schema<"ProposalView">;
type Device = Schema<"DeviceRow">;
type Application = Schema<"ApplicationView">;
type View = "wallet" | "proposals" | "devices" | "admin";

const state = {
  signer: null as Signer | null,
  client: null as IcnClient | null,
  coops: [] as Coop[],
  coop: null as Coop | null,
  application: null as Application | null,
  view: "wallet" as View,
  positions: [] as Position[],
  history: [] as EntryView[],
  proposals: [] as Proposal[],
  devices: [] as Device[],
  applications: [] as Application[],
  invite: null as string | null,
  sub: null as Subscription | null,
  /** A second key of this browser, registered as the member's device, that
   * spends an allowance: what pays while the node is out of reach. */
  spender: null as Signer | null,
  queue: null as OfflineQueue | null,
  queued: [] as Queued[],
};

// Timings the benchmark reads (web/bench): when the app became usable, and
// for each live event the wall-clock times it arrived and was on screen.
const perf = ((window as unknown as { icnPerf?: unknown }).icnPerf = {
  ready: 0,
  events: [] as { seq: number; event: string; received: number; shown: number }[],
});

const $ = (id: string) => document.getElementById(id) as HTMLElement;
const esc = (s: unknown) =>
  String(s ?? "").replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const short = (did: string) => (did.length > 20 ? `${did.slice(0, 14)}…${did.slice(-6)}` : did);

// ---- The device key, kept in IndexedDB (the private key never leaves WebCrypto).

function db(): Promise<IDBDatabase> {
  return new Promise((resolve, reject) => {
    const open = indexedDB.open("icn-wallet", 1);
    open.onupgradeneeded = () => open.result.createObjectStore("kv");
    open.onsuccess = () => resolve(open.result);
    open.onerror = () => reject(open.error);
  });
}

async function kv<T>(mode: IDBTransactionMode, act: (s: IDBObjectStore) => IDBRequest): Promise<T> {
  const d = await db();
  return new Promise((resolve, reject) => {
    const req = act(d.transaction("kv", mode).objectStore("kv"));
    req.onsuccess = () => resolve(req.result as T);
    req.onerror = () => reject(req.error);
  });
}

const load = <T>(key: string) => kv<T | undefined>("readonly", (s) => s.get(key));
const save = (key: string, value: unknown) => kv("readwrite", (s) => s.put(value, key));

// ---- Amounts: integers of a unit's smallest step, shown with its scale.

function scaleOf(unit: string): number {
  return state.coop?.policy.units[unit]?.scale ?? 0;
}

function show(amount: number, unit: string): string {
  const scale = scaleOf(unit);
  const abs = Math.abs(amount).toString().padStart(scale + 1, "0");
  const whole = scale ? `${abs.slice(0, -scale)}.${abs.slice(-scale)}` : abs;
  return `${amount < 0 ? "−" : ""}${whole} ${unit}`;
}

function parseAmount(text: string, unit: string): number | null {
  const scale = scaleOf(unit);
  const m = /^(\d+)(?:\.(\d+))?$/.exec(text.trim());
  if (!m || (m[2] ?? "").length > scale) return null;
  const amount = Number(m[1]) * 10 ** scale + Number((m[2] ?? "").padEnd(scale, "0") || 0);
  return Number.isSafeInteger(amount) && amount > 0 ? amount : null;
}

// ---- Talking to the node.

function notice(text: string, bad = false) {
  $("notice").innerHTML = `<p class="${bad ? "bad" : ""}">${esc(text)}</p>`;
  setTimeout(() => ($("notice").innerHTML = ""), 6000);
}

function why(e: unknown): string {
  return e instanceof IcnError ? e.message.replace(/^\d+ [^:]+: /, "") : String(e);
}

async function get<T>(path: string): Promise<T> {
  return (await state.client!.call("GET", path)) as T;
}

async function all<T>(path: string): Promise<T[]> {
  const out: T[] = [];
  for await (const item of state.client!.items<T>(path)) out.push(item);
  return out;
}

const me = () => state.signer!.did;
const coopPath = () => encodeURIComponent(state.coop!.id);

async function refreshCoops() {
  state.coops = await all<Coop>("/v1/coops");
  if (state.coop) state.coop = state.coops.find((c) => c.doc_id === state.coop!.doc_id) ?? null;
}

async function refreshWallet() {
  if (!state.coop) return;
  const [pos, history] = await Promise.all([
    get<Schema<"PositionAnswer">>(`/v1/ledger/${coopPath()}/position/${me()}`),
    get<Schema<"Page_EntryView">>(`/v1/ledger/${coopPath()}/history?limit=50`),
  ]);
  state.positions = pos.positions;
  state.history = history.items.slice().reverse();
  if (state.queue) {
    await state.queue.prepare(state.coop.id);
    state.queued = (await state.queue.items()).filter((q) => q.coop === state.coop!.id && q.state === "queued");
  }
}

async function refreshProposals() {
  const domains = await all<Schema<"DomainView">>(`/v1/gov/domains?coop_id=${coopPath()}`);
  const lists = await Promise.all(
    domains.map((d) => all<Proposal>(`/v1/gov/domains/${encodeURIComponent(d.doc_id)}/proposals`)),
  );
  state.proposals = lists.flat().sort((a, b) => b.created_at - a.created_at);
}

async function refreshDevices() {
  state.devices = (await all<Device>(`/v1/devices/${me()}`)).filter(
    (d) => d.coop_doc_id === state.coop?.doc_id,
  );
}

async function refreshAdmin() {
  state.applications = await all<Application>(`/v1/coops/${coopPath()}/applications`);
}

async function refresh() {
  try {
    if (state.view === "wallet") await refreshWallet();
    if (state.view === "proposals") await refreshProposals();
    if (state.view === "devices") await refreshDevices();
    if (state.view === "admin") await refreshAdmin();
  } catch (e) {
    notice(why(e), true);
  }
  render();
}

let pending: ReturnType<typeof setTimeout> | null = null;
function refreshSoon() {
  if (pending) return;
  pending = setTimeout(() => {
    pending = null;
    void refresh();
  }, 50);
}

function follow() {
  state.sub?.close();
  if (!state.coop) return;
  state.sub = state.client!.subscribe(
    state.coop.doc_id,
    {
      onEvent: (e: IcnEvent) => {
        perf.events.push({ seq: e.seq, event: e.event, received: Date.now(), shown: 0 });
        if (e.event === "SettlementCreated") {
          const data = e.data as { entry_id?: string; body?: { postings?: { account: string; amount: number }[] } };
          if (data.body?.postings?.some((p) => p.account === me() && p.amount > 0)) paidNotice = data.entry_id ?? null;
        }
        refreshSoon();
      },
      onState: (s) => {
        if (s === "open") void flush();
        const live = $("live");
        live.textContent = s === "open" ? "Live" : s === "reconnecting" ? "Reconnecting…" : "Offline";
        live.className = s;
      },
    },
    { autoReconnect: true, autoBackfill: true, gapDetection: true },
  );
}
/** A payment to this member that came in live, to announce once shown. */
let paidNotice: string | null = null;

// ---- Screens.

/** Repaints the screen, keeping what the member is typing (a live event
 * repaints while a payment is half written) and where the focus is. */
function render() {
  const app = $("app");
  const typed = new Map<string, string>();
  let focused: string | null = null;
  app.querySelectorAll<HTMLInputElement | HTMLSelectElement>("form [name]").forEach((el) => {
    const key = `${el.form?.getAttribute("id")}/${el.name}`;
    typed.set(key, el.value);
    if (el === document.activeElement) focused = key;
  });
  paint(app);
  app.querySelectorAll<HTMLInputElement | HTMLSelectElement>("form [name]").forEach((el) => {
    const key = `${el.form?.getAttribute("id")}/${el.name}`;
    const value = typed.get(key);
    if (value !== undefined) el.value = value;
    if (key === focused) el.focus();
  });
}

function paint(app: HTMLElement) {
  app.setAttribute("aria-busy", "false");
  if (!state.signer) {
    app.innerHTML = `
      <h2>Welcome</h2>
      <p>This wallet keeps a key on this device. It never leaves the browser: it signs your payments and votes.</p>
      <button id="make-key">Create my key</button>`;
    return;
  }
  if (!state.coop) {
    app.innerHTML = `
      <p>Your DID: <span class="did" id="my-did">${esc(me())}</span></p>
      ${state.coops.length ? `<h2>Your co-ops</h2><ul class="list">${state.coops
        .map((c) => `<li><span>${esc(c.name)}</span><button class="secondary" data-open="${esc(c.doc_id)}">Open ${esc(c.name)}</button></li>`)
        .join("")}</ul>` : ""}
      ${state.application ? `<p role="status">Application to ${esc(state.application.coop_id)}: <strong id="application-state">${esc(state.application.state)}</strong></p>` : ""}
      <h2>Join a co-op</h2>
      <form id="join">
        <label>Co-op id <input name="coop" required autocomplete="off"></label>
        <label>Invite code <input name="code" required autocomplete="off"></label>
        <button>Join</button>
      </form>
      <h2>Start a co-op</h2>
      <form id="create">
        <label>Co-op id (a-z, 0-9, -) <input name="id" required pattern="[a-z0-9][a-z0-9._:\\-]{0,63}" autocomplete="off"></label>
        <label>Name <input name="name"></label>
        <label>Unit <input name="unit" value="hours" required></label>
        <label>Credit limit per member <input name="limit" type="number" min="0" value="0"></label>
        <button>Start it</button>
      </form>`;
    return;
  }
  const c = state.coop;
  const tabs: [View, string][] = [["wallet", "Wallet"], ["proposals", "Proposals"], ["devices", "Devices"], ["admin", "Members"]];
  const nav = `<nav aria-label="Sections">${tabs
    .map(([v, label]) => `<button class="secondary" data-view="${v}" ${state.view === v ? 'aria-current="page"' : ""}>${label}</button>`)
    .join("")}<button class="secondary" data-leave>All co-ops</button></nav>`;
  app.innerHTML = `<h2 id="coop-name">${esc(c.name)}</h2>${nav}<section aria-labelledby="coop-name">${screen()}</section>`;
  if (perf.events.at(-1)?.shown === 0) {
    const now = Date.now();
    for (const e of perf.events) if (!e.shown) e.shown = now;
  }
  const paid = state.history.find((h) => h.id === paidNotice);
  if (paid) {
    paidNotice = null;
    notice(`You were paid: ${describe(paid).text}`);
  }
}

function screen(): string {
  switch (state.view) {
    case "wallet":
      return wallet();
    case "proposals":
      return proposals();
    case "devices":
      return devices();
    case "admin":
      return admin();
  }
}

function describe(h: EntryView): { text: string; mine: number; unit: string } {
  const body = h.entry.body as { kind: string; postings?: { account: string; unit: string; amount: number }[] };
  const mine = body.postings?.find((p) => p.account === me());
  const other = body.postings?.find((p) => p.account !== me());
  const unit = mine?.unit ?? other?.unit ?? "";
  const amount = mine?.amount ?? 0;
  const who = other ? (other.account === "treasury" ? "the treasury" : short(other.account)) : "";
  const text = body.kind !== "transfer" ? body.kind : amount >= 0 ? `${show(amount, unit)} from ${who}` : `${show(-amount, unit)} to ${who}`;
  return { text: h.entry.memo ? `${text} — ${h.entry.memo}` : text, mine: amount, unit };
}

function statusText(s: EntryView["status"]): string {
  if (s.status === "applied") return "counted";
  if (s.status === "pending") return "pending";
  return `conflicted: ${String(s.reason ?? "").replace(/_/g, " ")}`;
}

function wallet(): string {
  const units = Object.keys(state.coop!.policy.units);
  return `
    <h3>Balances</h3>
    <div class="balances" id="balances">${state.positions
      .map((p) => `<div class="balance" data-unit="${esc(p.unit)}"><span class="amount">${esc(show(p.balance, p.unit))}</span><span class="status">${esc(show(p.available ?? 0, p.unit))} available</span></div>`)
      .join("")}</div>
    <h3>Pay</h3>
    <form id="pay">
      <label>To (their DID) <input name="to" required pattern="did:icn:[1-9A-HJ-NP-Za-km-z]{32,44}" autocomplete="off"></label>
      <div class="row">
        <label>Amount <input name="amount" required inputmode="decimal" autocomplete="off"></label>
        <label>Unit <select name="unit">${units.map((u) => `<option>${esc(u)}</option>`).join("")}</select></label>
      </div>
      <label>Memo <input name="memo" maxlength="200"></label>
      <button>Pay</button>
    </form>
    <h3>Offline payments</h3>
    <p id="allowance">${state.spender ? esc(state.positions.map((p) => show(p.allowances?.[state.spender!.did] ?? 0, p.unit)).join(", ") || "nothing") : "Nothing"} set aside: this browser pays that much while the node is out of reach, and it counts when it is back.</p>
    <form id="set-aside">
      <div class="row">
        <label>Set aside <input name="amount" required inputmode="decimal" autocomplete="off"></label>
        <label>Unit <select name="unit">${units.map((u) => `<option>${esc(u)}</option>`).join("")}</select></label>
      </div>
      <button class="secondary">Set aside for offline</button>
    </form>
    <h3>History</h3>
    <ul class="list" id="history">${state.queued
      .map((q) => `<li data-queued="${esc(q.id)}"><span class="amount out">${esc(`${show(q.amount, q.unit)} to ${short(q.to)}${q.memo ? ` — ${q.memo}` : ""}`)}</span><span class="status pending">pending: queued on this device</span></li>`)
      .join("")}${state.history
      .map((h) => {
        const d = describe(h);
        return `<li data-entry="${esc(h.id)}"><span class="amount ${d.mine >= 0 ? "in" : "out"}">${esc(d.text)}</span><span class="status ${esc(h.status.status)}">${esc(statusText(h.status))}</span></li>`;
      })
      .join("") || "<li>No entries yet.</li>"}</ul>`;
}

function proposals(): string {
  return `<ul class="list" id="proposals">${state.proposals
    .map((p) => {
      const mine = p.votes.find((v) => v.voter === me());
      const votes = p.state === "open"
        ? `<div class="row" role="group" aria-label="Vote on ${esc(p.title)}">${["for", "against", "abstain"]
            .map((c) => `<button class="secondary" data-vote="${esc(c)}" data-proposal="${esc(p.id)}" data-domain="${esc(p.domain_doc_id)}">${c}</button>`)
            .join("")}</div>`
        : "";
      return `<li data-proposal-row="${esc(p.id)}"><span><strong>${esc(p.title)}</strong><br><span class="status">${esc(p.state)}${mine ? ` · you voted ${esc(mine.choice)}` : ""}${p.outcome ? ` · ${esc(p.outcome)}` : ""}</span></span>${votes}</li>`;
    })
    .join("") || "<li>No proposals.</li>"}</ul>`;
}

function devices(): string {
  return `<p>Your DID: <span class="did">${esc(me())}</span></p>
    <ul class="list" id="devices">${state.devices
      .map((d) => `<li><span>${esc(d.label ?? (d.is_did_key ? "This key (your DID)" : short(d.device)))}<br><span class="status">${esc(d.status)}${d.revoked_reason ? ` · ${esc(d.revoked_reason)}` : ""}</span></span>${d.status === "live" && !d.is_did_key ? `<button class="secondary" data-revoke="${esc(d.device)}">Revoke (lost)</button>` : ""}</li>`)
      .join("")}</ul>`;
}

function admin(): string {
  return `<h3>Invite someone</h3>
    <button id="invite">Create an invite code</button>
    ${state.invite ? `<p>Code: <strong class="did" id="invite-code">${esc(state.invite)}</strong> (works once)</p>` : ""}
    <h3>Applications</h3>
    <ul class="list" id="applications">${state.applications
      .map((a) => `<li><span class="did">${esc(a.did)}</span><span>${esc(a.state)}${a.state === "pending" ? ` <button data-approve="${esc(a.did)}">Approve</button>` : ""}</span></li>`)
      .join("") || "<li>None.</li>"}</ul>`;
}

// ---- What the member does.

/** A store for the offline queue, in IndexedDB. */
const queueStore = {
  load: async () => (await load<Queued[]>("queue")) ?? [],
  save: async (items: Queued[]) => void (await save("queue", items)),
};

function useSpender(signer: Signer) {
  state.spender = signer;
  state.queue = new OfflineQueue(state.client!, { device: signer, member: me(), store: queueStore });
}

/** Sets credit aside for this browser's spending key, making and
 * registering that key the first time. */
async function setAside(amount: number, unit: string) {
  const client = state.client!;
  const rows = await all<Device>(`/v1/devices/${me()}`);
  const row = (did: string) => rows.find((d) => d.device === did && d.coop_doc_id === state.coop!.doc_id);
  if (!state.spender || row(state.spender.did)?.status === "revoked") {
    // A new key (the old one, if any, was revoked: it never acts again).
    // Kept before it is registered: a key registered and then lost with
    // the page could never be used.
    const { signer, keys } = await generateSigner(false);
    await save("spender", keys);
    useSpender(signer);
  }
  const spender = state.spender!;
  if (!row(spender.did)) {
    const proof = await spender.sign(new TextEncoder().encode(`icn-device/v1\n${me()}`));
    await client.call("POST", `/v1/devices/${me()}`, {
      device: spender.did,
      label: "This browser (offline payments)",
      proof: toHex(proof),
    });
  }
  const answer = await grantAllowance(client, state.signer!, state.coop!.id, { device: spender.did, unit, amount });
  if (answer.status.status !== "applied") throw new Error(`the allowance is ${statusText(answer.status)}`);
}

let flushing = false;
/** Sends what was queued while offline; each is counted once. */
async function flush() {
  if (!state.queue || flushing || !navigator.onLine) return;
  flushing = true;
  try {
    const before = state.queued.length;
    const done = await state.queue.flush();
    const sent = done.filter((q) => q.state !== "queued");
    await queueStore.save(done.filter((q) => q.state === "queued"));
    if (before && sent.length) {
      const bad = sent.filter((q) => q.state === "refused" || q.state === "conflicted");
      notice(bad.length ? `${bad.length} queued payment(s) not counted: ${bad[0].reason}` : `Sent ${sent.length} queued payment(s)`, bad.length > 0);
    }
  } catch {
    // Still out of reach: they stay queued.
  } finally {
    flushing = false;
  }
  await refresh();
}

addEventListener("online", () => void flush());
addEventListener("offline", () => {
  $("live").textContent = "Offline: payments queue here";
  $("live").className = "closed";
});

async function makeKey() {
  const { keys } = await generateSigner(false);
  await save("device", keys);
  await start(keys);
}

async function start(keys: CryptoKeyPair) {
  state.signer = await signerFromKeyPair(keys);
  state.client = createClient({ baseUrl: location.origin });
  await state.client.authenticate(state.signer);
  const spender = await load<CryptoKeyPair>("spender");
  if (spender) useSpender(await signerFromKeyPair(spender));
  await refreshCoops();
  const last = await load<string>("coop");
  const app = await load<{ coop: string }>("application");
  if (app) {
    try {
      state.application = await get<Application>(`/v1/coops/${encodeURIComponent(app.coop)}/applications/${me()}`);
    } catch {
      state.application = null;
    }
  }
  if (last) await openCoop(last);
  else render();
}

async function openCoop(docId: string) {
  state.coop = state.coops.find((c) => c.doc_id === docId) ?? null;
  if (!state.coop) return render();
  await save("coop", docId);
  state.view = "wallet";
  follow();
  await refresh();
}

async function onSubmit(form: HTMLFormElement) {
  const f = Object.fromEntries(new FormData(form)) as Record<string, string>;
  const client = state.client!;
  // Not `form.id`: a form's control named `id` shadows it.
  const which = form.getAttribute("id");
  if (which === "join") {
    state.application = await client.call<Application>("POST", `/v1/coops/${encodeURIComponent(f.coop)}/applications`, { code: f.code });
    await save("application", { coop: f.coop });
    notice("Applied: an admin approves it");
    await refreshCoops();
    render();
  } else if (which === "create") {
    const coop = await client.call<Coop>("POST", "/v1/coops", {
      id: f.id,
      name: f.name || f.id,
      units: [f.unit],
      default_credit_limit: Number(f.limit || 0),
    });
    await refreshCoops();
    await openCoop(coop.doc_id);
  } else if (which === "set-aside") {
    const amount = parseAmount(f.amount, f.unit);
    if (amount === null) return notice(`Not an amount of ${f.unit}`, true);
    await setAside(amount, f.unit);
    form.reset();
    notice(`Set aside ${show(amount, f.unit)} for offline payments`);
    await refresh();
  } else if (which === "pay") {
    const amount = parseAmount(f.amount, f.unit);
    if (amount === null) return notice(`Not an amount of ${f.unit}`, true);
    const payment = { to: f.to.trim(), amount, unit: f.unit, memo: f.memo };
    let paid;
    try {
      if (!navigator.onLine) throw new TypeError("offline");
      paid = await client.settle(state.coop!.id, payment, { idempotencyKey: crypto.randomUUID() });
    } catch (e) {
      if (e instanceof IcnError || !state.queue) throw e;
      // The node is out of reach: pay from this browser's allowance.
      await state.queue.pay(state.coop!.id, payment);
      form.reset();
      state.queued = (await state.queue.items()).filter((q) => q.coop === state.coop!.id && q.state === "queued");
      notice(`Queued ${show(amount, f.unit)}: it is sent when the node is back`);
      return render();
    }
    form.reset();
    notice(paid.status.status === "applied" ? `Paid ${show(amount, f.unit)}` : `Recorded, ${statusText(paid.status)}`, paid.status.status !== "applied");
    await refresh();
  }
}

async function onClick(el: HTMLElement) {
  const d = el.dataset;
  const client = state.client!;
  if (el.id === "make-key") await makeKey();
  else if (d.open) await openCoop(d.open);
  else if (d.view) {
    state.view = d.view as View;
    await refresh();
  } else if (d.leave !== undefined) {
    state.coop = null;
    state.sub?.close();
    await save("coop", "");
    await refreshCoops();
    render();
  } else if (d.vote) {
    await client.call("POST", `/v1/gov/proposals/${encodeURIComponent(d.proposal!)}/vote?domain_id=${encodeURIComponent(d.domain!)}`, { choice: d.vote });
    notice(`Voted ${d.vote}`);
    await refresh();
  } else if (d.revoke) {
    await client.call("DELETE", `/v1/devices/${me()}/${d.revoke}?reason=lost`);
    notice("Revoked: it never acts for you again");
    await refresh();
  } else if (el.id === "invite") {
    state.invite = (await client.call<{ code: string }>("POST", `/v1/coops/${coopPath()}/invites`, {})).code;
    render();
  } else if (d.approve) {
    await client.call("POST", `/v1/coops/${coopPath()}/applications/${d.approve}/approve`);
    notice("Approved: a member now");
    await refresh();
  }
}

document.addEventListener("submit", (ev) => {
  ev.preventDefault();
  const form = ev.target as HTMLFormElement;
  onSubmit(form).catch((e) => notice(why(e), true));
});

document.addEventListener("click", (ev) => {
  const el = (ev.target as HTMLElement).closest("button") as HTMLElement | null;
  if (!el || el.closest("form")) return;
  onClick(el).catch((e) => notice(why(e), true));
});

async function boot() {
  try {
    const keys = await load<CryptoKeyPair>("device");
    if (keys) await start(keys);
    else render();
  } catch (e) {
    render();
    notice(why(e), true);
  }
  perf.ready = performance.now();
  document.body.dataset.ready = "true";
}

void boot();
