// A node-opcua server for the interop tests (tests/e2e/test_opcua_foreign_server.py): a PLC of
// another vendor's stack, served on loopback.
//
//   node server.js '{"port": 4841, "pki": "/tmp/x/pki", "user": "edge", "password": "..."}'
//
// The plant namespace `urn:foreign:plc` is registered after another one, so its index (3) is
// not the 2 our own simulator has: a client must resolve nsu= by the NamespaceArray. Every
// value is served with the fixed source timestamp below, so the test can assert it exactly.
// When the server listens, one line goes to stdout:
//   {"listening": <port>, "namespace": 3, "certificate": "<own certificate, PEM>"}
// Commands, one JSON object a line on stdin, each answered with {"ok": <cmd>} on stdout:
// s=Foreign.Level is an AnalogItem (Double, EURange 0..200) for percent deadbands.
//   {"cmd": "set", "node": "s=Foreign.Double", "value": 1.5, "source": "2026-...Z", "status": "Good"}
//   {"cmd": "trust", "file": "/path/client-cert.der"}   trust a client certificate
//   {"cmd": "stop"}                                       graceful shutdown, then exit
"use strict";

const fs = require("fs");
const path = require("path");
const readline = require("readline");
const {
  OPCUAServer,
  OPCUACertificateManager,
  Variant,
  VariantArrayType,
  DataType,
  StatusCodes,
  MessageSecurityMode,
  SecurityPolicy,
} = require("node-opcua");

const PLC_NAMESPACE = "urn:foreign:plc";
const SOURCE = new Date("2026-03-04T05:06:07.890Z");

// name, node id (in PLC_NAMESPACE), data type, value, status
const VARIABLES = [
  ["Double", "s=Foreign.Double", DataType.Double, 21.5, "Good"],
  ["Float", "s=Foreign.Float", DataType.Float, 1.25, "Good"],
  ["Int16", "s=Foreign.Int16", DataType.Int16, -1234, "Good"],
  ["UInt16", "s=Foreign.UInt16", DataType.UInt16, 65535, "Good"],
  ["Int32", "i=2001", DataType.Int32, -2147483648, "Good"],
  ["UInt32", "i=2002", DataType.UInt32, 4294967295, "Good"],
  ["Byte", "s=Foreign.Byte", DataType.Byte, 255, "Good"],
  ["SByte", "s=Foreign.SByte", DataType.SByte, -128, "Good"],
  // 64-bit integers as node-opcua takes them, [high, low] 32-bit words of the two's
  // complement: -9007199254740993 (one past what a double holds) and 2^64 - 1.
  ["Int64", "s=Foreign.Int64", DataType.Int64, [4292870143, 4294967295], "Good"],
  ["UInt64", "s=Foreign.UInt64", DataType.UInt64, [4294967295, 4294967295], "Good"],
  ["Boolean", "s=Foreign.Boolean", DataType.Boolean, true, "Good"],
  ["String", "s=Foreign.String", DataType.String, "Grüße aus Node", "Good"],
  ["Stamp", "s=Foreign.Stamp", DataType.DateTime, new Date("2025-12-31T23:59:58.125Z"), "Good"],
  ["Failed", "s=Foreign.Failed", DataType.Double, 0, "BadSensorFailure"],
  ["Stale", "s=Foreign.Stale", DataType.Double, 7.5, "UncertainLastUsableValue"],
];

function status(name) {
  const code = StatusCodes[name];
  if (code === undefined) throw new Error(`no status code ${name}`);
  return code;
}

async function main() {
  const opts = JSON.parse(process.argv[2] || "{}");
  const pki = opts.pki;
  fs.mkdirSync(pki, { recursive: true });
  const serverCertificateManager = new OPCUACertificateManager({
    rootFolder: path.join(pki, "server"),
    automaticallyAcceptUnknownCertificate: false,
  });
  await serverCertificateManager.initialize();
  const users = opts.user ? { [opts.user]: opts.password } : {};
  const server = new OPCUAServer({
    port: opts.port,
    host: "127.0.0.1",
    hostname: "127.0.0.1",
    serverCertificateManager,
    securityModes: [MessageSecurityMode.None, MessageSecurityMode.SignAndEncrypt],
    securityPolicies: [SecurityPolicy.None, SecurityPolicy.Basic256Sha256],
    allowAnonymous: true,
    userManager: {
      isValidUser: (name, password) => users[name] !== undefined && users[name] === password,
    },
    serverInfo: { applicationUri: "urn:foreign:node-opcua:plc" },
    buildInfo: { productName: "foreign PLC (node-opcua)" },
    isAuditing: false,
  });
  await server.initialize();
  const addressSpace = server.engine.addressSpace;
  addressSpace.registerNamespace("urn:foreign:other");
  const ns = addressSpace.registerNamespace(PLC_NAMESPACE);
  const plc = ns.addObject({
    organizedBy: addressSpace.rootFolder.objects,
    browseName: "Foreign",
    nodeId: "s=Foreign",
  });
  const byNode = new Map();
  for (const [name, nodeId, dataType, value, code] of VARIABLES) {
    const variable = ns.addVariable({
      componentOf: plc,
      browseName: name,
      nodeId,
      dataType: DataType[dataType],
      minimumSamplingInterval: 50,
    });
    const variant = new Variant({ dataType, arrayType: VariantArrayType.Scalar, value });
    variable.setValueFromSource(variant, status(code), SOURCE);
    byNode.set(nodeId, variable);
  }

  // An AnalogItem with an EURange: what a percent deadband is a percent of (OPC 10000-8).
  const level = ns.addAnalogDataItem({
    componentOf: plc,
    browseName: "Level",
    nodeId: "s=Foreign.Level",
    dataType: "Double",
    engineeringUnitsRange: { low: 0, high: 200 },
    minimumSamplingInterval: 50,
  });
  const hundred = new Variant({ dataType: DataType.Double, value: 100 });
  level.setValueFromSource(hundred, StatusCodes.Good, SOURCE);
  byNode.set("s=Foreign.Level", level);

  await server.start();
  const certificate = server.certificateFile;
  process.stdout.write(
    JSON.stringify({ listening: opts.port, namespace: ns.index, certificate }) + "\n",
  );

  async function stop() {
    await server.shutdown(100);
    process.stdout.write(JSON.stringify({ ok: "stop" }) + "\n");
    process.exit(0);
  }
  process.on("SIGTERM", stop);

  const lines = readline.createInterface({ input: process.stdin });
  for await (const line of lines) {
    if (!line.trim()) continue;
    const command = JSON.parse(line);
    if (command.cmd === "set") {
      const variable = byNode.get(command.node);
      const dataType = DataType[variable.dataTypeObj.browseName.name];
      const source = command.source ? new Date(command.source) : new Date();
      variable.setValueFromSource(
        new Variant({ dataType, arrayType: VariantArrayType.Scalar, value: command.value }),
        status(command.status || "Good"),
        source,
      );
    } else if (command.cmd === "trust") {
      await serverCertificateManager.trustCertificate(fs.readFileSync(command.file));
    } else if (command.cmd === "stop") {
      await stop();
    } else {
      throw new Error(`unknown command ${line}`);
    }
    process.stdout.write(JSON.stringify({ ok: command.cmd }) + "\n");
  }
  await stop(); // stdin closed: the test is gone
}

main().catch((err) => {
  process.stderr.write(`server.js: ${err && err.stack ? err.stack : err}\n`);
  process.exit(1);
});
