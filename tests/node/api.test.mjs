// A client in another language: Node.js loads protos/ as they are and drives
// the kubeling API server at $KUBELING_API (host:port).
import { test } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import { fileURLToPath } from "node:url";
import grpc from "@grpc/grpc-js";
import protoLoader from "@grpc/proto-loader";

const here = path.dirname(fileURLToPath(import.meta.url));
const protoRoot = path.join(here, "..", "..", "protos");
const address = process.env.KUBELING_API;

const definition = protoLoader.loadSync("kubeling/api/v1/api.proto", {
  includeDirs: [protoRoot],
  keepCase: true,
  longs: String,
  enums: String,
  oneofs: true,
});
const { Api } = grpc.loadPackageDefinition(definition).kubeling.api.v1;

function call(client, method, request) {
  return new Promise((resolve, reject) => {
    client[method](request, { deadline: Date.now() + 10000 }, (err, reply) =>
      err ? reject(err) : resolve(reply));
  });
}

test("create a namespace and a Deployment, read it back, and see the watch event", async () => {
  assert.ok(address, "KUBELING_API must name the API server (host:port)");
  const client = new Api(address, grpc.credentials.createInsecure());
  const ns = `node-${process.pid}-${Date.now() % 100000}`;
  try {
    const created = await call(client, "Create", {
      object: { namespace: { api_version: "v1", kind: "Namespace", metadata: { name: ns } } },
    });
    assert.equal(created.kind, "namespace");
    assert.ok(created.namespace.metadata.uid, "the server sets a uid");

    // Watch deployments in the namespace from the namespace's version on.
    const events = [];
    const stream = client.Watch({
      resource: "deployments",
      namespace: ns,
      resource_version: created.namespace.metadata.resource_version,
    });
    const added = new Promise((resolve, reject) => {
      stream.on("data", (ev) => {
        events.push(ev);
        if (ev.type === "ADDED") resolve(ev);
      });
      stream.on("error", (err) => { if (err.code !== grpc.status.CANCELLED) reject(err); });
    });

    const deployment = {
      api_version: "apps/v1",
      kind: "Deployment",
      metadata: { name: "web", namespace: ns, labels: { app: "web" } },
      spec: {
        replicas: 2,
        selector: { match_labels: { app: "web" } },
        template: {
          metadata: { labels: { app: "web" } },
          spec: { containers: [{ name: "web", image: "localhost/kubeling/http:1",
                                  ports: [{ container_port: 8080 }] }] },
        },
      },
    };
    const made = await call(client, "Create", { object: { deployment } });
    assert.equal(made.deployment.metadata.generation, "1");
    assert.equal(made.deployment.spec.strategy.type, "RollingUpdate", "defaults are applied");

    const got = await call(client, "Get", { resource: "deployments", namespace: ns, name: "web" });
    assert.equal(got.deployment.spec.replicas, 2);
    assert.equal(got.deployment.spec.template.spec.containers[0].image, "localhost/kubeling/http:1");
    assert.equal(got.deployment.metadata.resource_version, made.deployment.metadata.resource_version);

    const ev = await added;
    assert.equal(ev.object.deployment.metadata.name, "web");
    assert.equal(ev.object.deployment.metadata.resource_version, made.deployment.metadata.resource_version);
    stream.cancel();

    // Errors arrive as gRPC status codes with a message naming the object.
    await assert.rejects(call(client, "Get", { resource: "deployments", namespace: ns, name: "nope" }),
      (err) => err.code === grpc.status.NOT_FOUND && /deployments.apps "nope" not found/.test(err.details));
  } finally {
    await call(client, "Delete", { resource: "deployments", namespace: ns, name: "web" }).catch(() => {});
    await call(client, "Delete", { resource: "namespaces", name: ns }).catch(() => {});
    client.close();
  }
});
