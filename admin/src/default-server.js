// Offers the server of `make serve` at login until another one was used: seeds Kinto Admin's
// own list of the servers used, most recent first (lib/store/localStore.js), which its
// reducers read once, when they are imported (so main.js imports this module first).
const HISTORY_KEY = "kinto-admin-server-history";
if (!localStorage.getItem(HISTORY_KEY)) {
  const server = { server: process.env.KINTO_ADMIN_SERVER, authType: "basicauth" };
  localStorage.setItem(HISTORY_KEY, JSON.stringify([server]));
}
