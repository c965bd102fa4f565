// A node-opcua client for the interop tests (tests/e2e/test_opcua_foreign_client.py): reads
// our simulated PLC the way another vendor's SCADA would. One JSON request on stdin:
//   {"url": "opc.tcp://127.0.0.1:4840", "namespace": "urn:plant:plc", "pki": "/tmp/pki",
//    "security": {"mode": "SignAndEncrypt", "policy": "Basic256Sha256"},   (default None)
//    "trust": "/path/server.der", "user": "edge", "password": "...",
//    "browse": "PLC1", "read": ["s=Tank1.Temperature", "i=1002"],
//    "paths": [["PLC1", "Pump1", "RunHours"]], "monitor": "i=1001", "notifications": 3}
// and one JSON answer on stdout: the namespace array, the endpoints offered, the tree under
// Objects/<browse> (browse path, node id, class, data type name, value, EURange), each read
// (value, data type, status, timestamps), each translated path and the monitored values;
// {"error": ..., "certificate": ...} when the session could not be made. Node ids in the
// answer are given in the `ns=<index>;...` of the namespace asked for.
"use strict";

const fs = require("fs");
const path = require("path");
const {
  OPCUAClient,
  OPCUACertificateManager,
  AttributeIds,
  BrowseDirection,
  DataType,
  MessageSecurityMode,
  NodeClass,
  SecurityPolicy,
  TimestampsToReturn,
  UserTokenType,
  makeBrowsePath,
  resolveNodeId,
} = require("node-opcua");

function readStdin() {
  return new Promise((resolve) => {
    let text = "";
    process.stdin.on("data", (chunk) => (text += chunk));
    process.stdin.on("end", () => resolve(text));
  });
}

function plain(value) {
  if (value instanceof Date) return value.toISOString();
  if (value && typeof value === "object" && "low" in value && "high" in value) {
    return { low: value.low, high: value.high }; // a Range (EURange)
  }
  return value;
}

async function typeName(session, dataTypeId) {
  if (dataTypeId.namespace === 0 && DataType[dataTypeId.value] !== undefined) {
    return DataType[dataTypeId.value];
  }
  const dv = await session.read({ nodeId: dataTypeId, attributeId: AttributeIds.BrowseName });
  return dv.value.value ? dv.value.value.name : dataTypeId.toString();
}

async function walk(session, nodeId, prefix, out) {
  const result = await session.browse({
    nodeId,
    browseDirection: BrowseDirection.Forward,
    referenceTypeId: "HierarchicalReferences",
    includeSubtypes: true,
    resultMask: 63,
  });
  for (const ref of result.references || []) {
    const name = ref.browseName.name;
    const where = prefix ? `${prefix}/${name}` : name;
    const entry = { path: where, nodeId: ref.nodeId.toString(), nodeClass: NodeClass[ref.nodeClass] };
    if (ref.nodeClass === NodeClass.Variable) {
      const [type, value] = await session.read([
        { nodeId: ref.nodeId, attributeId: AttributeIds.DataType },
        { nodeId: ref.nodeId, attributeId: AttributeIds.Value },
      ]);
      entry.dataType = await typeName(session, type.value.value);
      entry.value = plain(value.value.value);
      entry.status = value.statusCode.name;
    }
    out.push(entry);
    if (ref.nodeClass === NodeClass.Object || ref.nodeClass === NodeClass.Variable) {
      await walk(session, ref.nodeId, where, out);
    }
  }
}

async function main() {
  const request = JSON.parse(await readStdin());
  const security = request.security || { mode: "None" };
  fs.mkdirSync(request.pki, { recursive: true });
  const clientCertificateManager = new OPCUACertificateManager({
    rootFolder: request.pki,
    automaticallyAcceptUnknownCertificate: false,
  });
  await clientCertificateManager.initialize();
  if (request.trust) {
    await clientCertificateManager.trustCertificate(fs.readFileSync(request.trust));
  }
  const client = OPCUAClient.create({
    applicationName: "foreign SCADA (node-opcua)",
    applicationUri: "urn:foreign:node-opcua:scada",
    clientCertificateManager,
    securityMode: MessageSecurityMode[security.mode],
    securityPolicy: security.policy ? SecurityPolicy[security.policy] : SecurityPolicy.None,
    endpointMustExist: false,
    connectionStrategy: { maxRetry: 0, initialDelay: 100, maxDelay: 200 },
    requestedSessionTimeout: 30000,
  });
  const answer = {};
  try {
    await client.connect(request.url);
    answer.certificate = client.certificateFile;
    const endpoints = await client.getEndpoints();
    answer.endpoints = endpoints.map((e) => [
      MessageSecurityMode[e.securityMode],
      e.securityPolicyUri.split("#")[1],
    ]);
    const identity = request.user
      ? { type: UserTokenType.UserName, userName: request.user, password: request.password }
      : undefined;
    const session = await client.createSession(identity);
    try {
      const ns = await session.readNamespaceArray();
      answer.namespaces = ns;
      const index = ns.indexOf(request.namespace);
      answer.namespaceIndex = index;
      const id = (key) => resolveNodeId(`ns=${index};${key}`);

      if (request.browse) {
        const [start] = await session.translateBrowsePath([
          makeBrowsePath("RootFolder", `/Objects/${index}:${request.browse}`),
        ]);
        const tree = [];
        await walk(session, start.targets[0].targetId, "", tree);
        answer.browse = tree;
      }
      answer.reads = {};
      for (const key of request.read || []) {
        const [dv] = await session.read([{ nodeId: id(key), attributeId: AttributeIds.Value }], 0);
        const [type] = await session.read([{ nodeId: id(key), attributeId: AttributeIds.DataType }]);
        answer.reads[key] = {
          value: plain(dv.value.value),
          variantType: DataType[dv.value.dataType],
          dataType: type.statusCode.isGood() ? await typeName(session, type.value.value) : null,
          status: dv.statusCode.name,
          sourceTimestamp: dv.sourceTimestamp ? dv.sourceTimestamp.toISOString() : null,
          serverTimestamp: dv.serverTimestamp ? dv.serverTimestamp.toISOString() : null,
        };
      }
      answer.paths = {};
      for (const names of request.paths || []) {
        const text = names.map((n) => `/${index}:${n}`).join("");
        const [result] = await session.translateBrowsePath([
          makeBrowsePath("ObjectsFolder", text),
        ]);
        answer.paths[names.join("/")] = {
          status: result.statusCode.name,
          nodeId: result.targets && result.targets.length ? result.targets[0].targetId.toString() : null,
        };
      }
      if (request.monitor) {
        const subscription = await session.createSubscription2({
          requestedPublishingInterval: 100,
          requestedLifetimeCount: 100,
          requestedMaxKeepAliveCount: 10,
          publishingEnabled: true,
        });
        const seen = [];
        await new Promise((resolve, reject) => {
          const timer = setTimeout(() => reject(new Error("too few notifications")), 10000);
          subscription
            .monitor(
              { nodeId: id(request.monitor), attributeId: AttributeIds.Value },
              { samplingInterval: 50, queueSize: 10, discardOldest: true },
              TimestampsToReturn.Both,
            )
            .then((item) =>
              item.on("changed", (dv) => {
                seen.push({ value: plain(dv.value.value), status: dv.statusCode.name });
                if (seen.length >= (request.notifications || 3)) {
                  clearTimeout(timer);
                  resolve();
                }
              }),
            )
            .catch(reject);
        });
        // Notifications that come before terminate() lands are not part of the answer.
        answer.monitored = seen.slice(0, request.notifications || 3);
        await subscription.terminate();
      }
    } finally {
      await session.close();
    }
  } catch (err) {
    answer.error = String(err && err.message ? err.message : err);
    answer.certificate = client.certificateFile;
  } finally {
    await client.disconnect();
  }
  process.stdout.write(JSON.stringify(answer) + "\n");
}

main().catch((err) => {
  process.stderr.write(`client.js: ${err && err.stack ? err.stack : err}\n`);
  process.exit(1);
});
