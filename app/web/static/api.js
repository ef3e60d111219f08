// The one place where the page and the dashboard talk to dalc's HTTP API.
// Every call goes through request(): headers a deployment needs (a token, say) are added here only.

export class Problem extends Error {
  // An RFC 9457 problem+json answer, or a network failure shaped like one.
  constructor(status, body) {
    super(body.detail || body.title || `HTTP ${status}`);
    this.status = status;
    this.code = body.code || "http_error";
    this.body = body;
  }
}

// The API token, when the deployment requires one: kept in sessionStorage, so for this tab only.
const TOKEN_KEY = "dalc-token";
export const token = {
  get: () => sessionStorage.getItem(TOKEN_KEY),
  set: (value) => (value ? sessionStorage.setItem(TOKEN_KEY, value) : sessionStorage.removeItem(TOKEN_KEY)),
};

function headers(extra) {
  const all = Object.assign({ Accept: "application/json" }, extra);
  const secret = token.get();
  if (secret) all.Authorization = `Bearer ${secret}`;
  return all;
}

export async function request(method, path, body) {
  const init = { method, headers: headers() };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (error) {
    throw new Problem(0, { code: "network_error", detail: "dalc cannot be reached: " + error.message });
  }
  const type = response.headers.get("Content-Type") || "";
  const text = await response.text();
  const data = type.includes("json") ? JSON.parse(text, exactResults) : { detail: text };
  if (!response.ok) {
    throw new Problem(response.status, data);
  }
  return data;
}

// Results may be integers past JavaScript's 2**53; show them as the API wrote them, digit for digit.
function exactResults(key, value, context) {
  return key === "result" && typeof value === "number" && context && context.source ? context.source : value;
}

export const api = {
  submit: (expressions) =>
    request("POST", "/tasks", expressions.length === 1
      ? { expression: expressions[0] }
      : expressions.map((expression) => ({ expression }))),
  wait: (id, seconds) => request("GET", `/tasks/${id}?wait=${seconds}`),
  list: (status, limit, before) => {
    const query = new URLSearchParams({ limit: String(limit) });
    if (status) query.set("status", status);
    if (before) query.set("before", before);
    return request("GET", `/tasks?${query}`);
  },
  cancel: (id) => request("POST", `/tasks/${id}/cancel`),
  stats: () => request("GET", "/stats"),
};

// Build an element whose text is set as text, never parsed as HTML.
export function el(tag, attributes, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes || {})) {
    if (value !== null && value !== undefined && value !== false) node.setAttribute(name, value);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}
