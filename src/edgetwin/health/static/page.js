// edgetwin's read-only page: the devices from /api/devices, a property's history from
// /api/history, plotted with uPlot. Everything from the node goes in with textContent.
"use strict";

const REFRESH_MS = 2000;
const HOUR_MS = 3600 * 1000;
let selected = null; // {device, property}
let plot = null;

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function ago(ms, now) {
  if (!ms) return "never";
  const s = Math.max(0, Math.round((now - ms) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  return new Date(ms).toLocaleString();
}

function writeWords(write, now) {
  if (!write) return "";
  switch (write.phase) {
    case "pending":
    case "sent":
      return `${write.phase} ${Math.round((now - write.set) / 1000)}s`;
    case "failed":
      return `failed: ${write.reason || ""}`;
    case "timedout":
      return `timed out: ${write.reason || ""}`;
    default:
      return write.phase;
  }
}

function render(data) {
  document.getElementById("node").textContent = `node ${data.node}`;
  document.getElementById("updated").textContent =
    `${data.devices.length} device(s) at ${new Date(data.now).toLocaleTimeString()}`;
  const body = document.querySelector("#devices tbody");
  const rows = [];
  for (const device of data.devices) {
    const head = el("tr", undefined, "device");
    head.dataset.device = device.id;
    head.append(
      el("td", device.id),
      el("td", device.state, `state state-${device.state}`),
      el("td"), el("td"), el("td"),
      el("td", ago(device.last_online, data.now)),
    );
    rows.push(head);
    for (const prop of device.properties) {
      const row = el("tr", undefined, "property");
      row.dataset.device = device.id;
      row.dataset.property = prop.name;
      if (selected && selected.device === device.id && selected.property === prop.name) {
        row.classList.add("selected");
      }
      const name = el("td");
      const button = el("button", prop.name);
      button.title = "plot its history";
      button.addEventListener("click", () => select(device.id, prop.name));
      name.append(button);
      const reported = el("td", prop.reported ?? "-", "reported");
      if (prop.out_of_range) {
        reported.classList.add("out-of-range");
        reported.title = prop.out_of_range;
      }
      const phase = prop.write ? prop.write.phase : "none";
      const write = el("td", writeWords(prop.write, data.now), `write phase-${phase}`);
      if (prop.write) write.title = `set by ${prop.write.by}`;
      row.append(
        name,
        el("td", prop.type),
        el("td", prop.desired ?? "-", "desired"),
        reported,
        write,
        el("td", ago(prop.reported_ts, data.now)),
      );
      rows.push(row);
    }
  }
  body.replaceChildren(...rows);
}

function number(value, type) {
  if (value === null || value === undefined) return null;
  if (type === "boolean") return value === "true" ? 1 : 0;
  const parsed = Number(value);
  return Number.isFinite(parsed) ? parsed : null;
}

async function drawPlot() {
  if (!selected) return;
  const since = Date.now() - HOUR_MS;
  const query = new URLSearchParams({
    device: selected.device, property: selected.property, since: String(since),
  });
  const answer = await fetch(`api/history?${query}`);
  if (!answer.ok) return;
  const {events} = await answer.json();
  const type = document.querySelector(
    `tr.property[data-device="${CSS.escape(selected.device)}"][data-property="${CSS.escape(selected.property)}"] td:nth-child(2)`,
  )?.textContent;
  const xs = [], reported = [], desired = [];
  let lastReported = null, lastDesired = null;
  for (const event of events) {
    if (event.kind === "reported") lastReported = number(event.value, type);
    else if (event.kind === "desired") lastDesired = number(event.value, type);
    else continue;
    xs.push(event.ts / 1000);
    reported.push(lastReported);
    desired.push(lastDesired);
  }
  if (xs.length) { // the values hold until now
    xs.push(Date.now() / 1000);
    reported.push(lastReported);
    desired.push(lastDesired);
  }
  const box = document.getElementById("plot");
  box.dataset.points = String(Math.max(0, xs.length - 1));
  box.dataset.last = lastReported === null ? "" : String(lastReported);
  const stepped = uPlot.paths.stepped({align: 1});
  const options = {
    width: Math.min(box.parentElement.clientWidth || 900, 1100),
    height: 260,
    series: [
      {},
      {label: "reported", stroke: "#1561b8", width: 2, paths: stepped, spanGaps: true},
      {label: "desired", stroke: "#b3261e", dash: [6, 4], paths: stepped, spanGaps: true},
    ],
  };
  if (plot) plot.destroy();
  plot = new uPlot(options, [xs, reported, desired], box);
}

function select(device, property) {
  selected = {device, property};
  const section = document.getElementById("plot-section");
  section.hidden = false;
  document.getElementById("plot-title").textContent = `${device} ${property}`;
  const url = new URL(location.href);
  url.searchParams.set("device", device);
  url.searchParams.set("property", property);
  history.replaceState(null, "", url);
  refresh();
}

async function refresh() {
  try {
    const answer = await fetch("api/devices");
    render(await answer.json());
    await drawPlot();
  } catch (error) {
    document.getElementById("updated").textContent = `the node does not answer (${error})`;
  }
}

const params = new URLSearchParams(location.search);
if (params.get("device") && params.get("property")) {
  select(params.get("device"), params.get("property"));
} else {
  refresh();
}
setInterval(refresh, REFRESH_MS);
