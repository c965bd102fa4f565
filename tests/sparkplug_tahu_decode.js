// Decode Sparkplug B payloads with Eclipse Tahu's `sparkplug-payload` (npm), independently
// of our Python encoder: one base64 payload per stdin line, one JSON document per stdout
// line. 64-bit integers (protobufjs Long) are printed as decimal strings.
"use strict";
const readline = require("readline");
const sparkplug = require("sparkplug-payload").get("spBv1.0");

function plain(value) {
  if (value === null || value === undefined) return value;
  if (typeof value === "object" && typeof value.toNumber === "function" && "low" in value) {
    return value.toString();
  }
  if (Array.isArray(value)) return value.map(plain);
  if (typeof value === "object") {
    const out = {};
    for (const [k, v] of Object.entries(value)) out[k] = plain(v);
    return out;
  }
  return value;
}

const lines = readline.createInterface({ input: process.stdin });
lines.on("line", (line) => {
  const decoded = sparkplug.decodePayload(Buffer.from(line.trim(), "base64"));
  process.stdout.write(JSON.stringify(plain(decoded)) + "\n");
});
