// Tether chat: the page's logic, on the official socket.io-client (no framework).
//
// Query parameters:
//   ?name=Alice          prefills the name box
//   ?reconnectDelay=ms   a fixed reconnection delay (no random jitter); the browser test
//                        uses it to keep a dropped page offline for a known time
"use strict";

(() => {
  const params = new URLSearchParams(location.search);
  const $ = (id) => document.getElementById(id);
  const ui = {
    status: $("status"),
    sid: $("sid"),
    transport: $("transport"),
    recovery: $("recovery"),
    messages: $("messages"),
    form: $("send"),
    name: $("name"),
    text: $("text"),
    drop: $("drop"),
  };

  const options = {};
  const delay = Number(params.get("reconnectDelay"));
  if (delay > 0) {
    options.reconnectionDelay = delay;
    options.reconnectionDelayMax = delay;
    options.randomizationFactor = 0;
  }
  const socket = io(options);
  window.socket = socket; // for the console

  ui.name.value = params.get("name") || localStorage.getItem("tether-chat-name") || `guest-${Math.floor(Math.random() * 1000)}`;
  ui.name.addEventListener("change", () => localStorage.setItem("tether-chat-name", ui.name.value.trim()));

  // Which messages came by replay?
  //
  // When a socket comes back and recovers, the server writes, in this order and under
  // one lock (so that no live event can slip in between): the CONNECT reply, every event
  // the socket missed (in the order they were emitted), and only then starts delivering
  // live events to it. Its connection handler also emits a `hello` event to the socket
  // before that CONNECT reply; `hello` is logged like any other event, so it arrives as
  // the last event of the replay, after everything that was emitted before the server
  // took the reconnection.
  //
  // So the rule needs no clock and no tag on the messages: a `chat` event received after
  // a `connect` with `socket.recovered === true` and before the `hello` that follows it
  // was emitted while this page was away, and is marked "replayed". Everything after
  // `hello` is live. (On a fresh connection, `hello` comes right after `connect` and
  // nothing is marked. An event emitted in the instant between the connection handler
  // and the CONNECT reply also travels in the replay, after `hello`: it is shown as live,
  // which it is, since the server had already taken the reconnection.)
  let replaying = false;
  let replayed = 0;
  let everConnected = false;

  // `detail` goes in the tooltip: the boxes are narrow.
  function setStatus(state, detail = "") {
    ui.status.dataset.state = state;
    ui.status.textContent = state === "reconnecting" ? "reconnecting…" : state;
    ui.status.title = detail;
    ui.drop.disabled = state !== "connected";
  }

  function setRecovery(recovered, text, detail = "") {
    ui.recovery.dataset.recovered = String(recovered);
    ui.recovery.textContent = text;
    ui.recovery.title = detail;
  }

  function scrollDown() {
    ui.messages.scrollTop = ui.messages.scrollHeight;
  }

  function system(text) {
    const li = document.createElement("li");
    li.className = "sys";
    li.textContent = text;
    ui.messages.append(li);
    scrollDown();
  }

  function message(msg, offset, isReplay) {
    const li = document.createElement("li");
    li.className = isReplay ? "msg replayed" : "msg";
    li.dataset.replayed = String(isReplay);
    if (offset !== undefined) li.dataset.offset = offset;
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = msg.name;
    const text = document.createElement("span");
    text.className = "text";
    text.textContent = msg.text;
    const at = document.createElement("time");
    const when = new Date(msg.at);
    at.dateTime = when.toISOString();
    at.textContent = when.toLocaleTimeString();
    li.append(at, name, text);
    if (isReplay) {
      const badge = document.createElement("span");
      badge.className = "badge";
      badge.textContent = "replayed";
      badge.title = "Sent while you were disconnected; delivered by connection state recovery";
      li.append(badge);
    }
    ui.messages.append(li);
    scrollDown();
  }

  // With recovery on, every recoverable event ends with its offset (a string), which the
  // client also keeps as `socket._lastOffset`; take it off the arguments.
  function splitOffset(args) {
    const last = args[args.length - 1];
    return typeof last === "string" && args.length > 1
      ? [args.slice(0, -1), last]
      : [args, undefined];
  }

  function watchTransport() {
    const engine = socket.io.engine;
    ui.transport.textContent = engine.transport.name;
    engine.once("upgrade", (transport) => {
      ui.transport.textContent = transport.name;
    });
  }

  socket.on("connect", () => {
    setStatus("connected");
    ui.sid.textContent = socket.id;
    watchTransport();
    if (socket.recovered) {
      replaying = true;
      replayed = 0;
      setRecovery(true, "recovered, replaying…");
    } else if (everConnected) {
      setRecovery(false, "not recovered", "a new session: what was sent meanwhile is lost");
      system("Reconnected as a new session: messages sent while you were away are lost.");
    }
    everConnected = true;
  });

  socket.on("hello", () => {
    if (replaying) {
      replaying = false;
      const n = replayed === 1 ? "1 missed message" : `${replayed} missed messages`;
      setRecovery(true, `recovered ✓ (${replayed} replayed)`, `same socket id, ${n} replayed`);
      system(`Reconnected with the same id: ${n} replayed.`);
    }
  });

  socket.on("chat", (...args) => {
    const [[msg], offset] = splitOffset(args);
    if (!msg || typeof msg.text !== "string") return;
    if (replaying) replayed += 1;
    message(msg, offset, replaying);
  });

  socket.on("disconnect", (reason) => {
    replaying = false;
    setStatus("disconnected", reason);
    ui.transport.textContent = "–";
    system(socket.active ? `Disconnected: ${reason}. Reconnecting…` : `Disconnected: ${reason}.`);
  });

  socket.io.on("reconnect_attempt", (n) => setStatus("reconnecting", `attempt ${n}`));
  socket.on("connect_error", (err) => setStatus("disconnected", `connection failed: ${err.message}`));

  ui.form.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = ui.text.value.trim();
    if (!text) return;
    // Sent while offline, it waits in the client's buffer until the connection is back.
    socket.emit("chat", { name: ui.name.value.trim(), text });
    ui.text.value = "";
    ui.text.focus();
  });

  // Ask the server to close this connection abruptly (no DISCONNECT packet), as a network
  // failure would: the client reconnects by itself and the server restores the session.
  ui.drop.addEventListener("click", () => socket.emit("kill-transport"));
})();
