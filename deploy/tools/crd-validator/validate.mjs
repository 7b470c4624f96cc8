// Validate prometheus-operator custom resources against the JSON schemas that @kubernetes-models generates
// from prometheus-operator's Go API types (monitoring.coreos.com/v1).
//
// stdin: a JSON array of Kubernetes objects (the test converts kustomize's YAML output to JSON).
// stdout: one JSON line per object: {"kind", "name", "ok", "error"}; exit code 1 if any object fails.
// Objects of another API group are reported with ok=false: this validator only knows monitoring.coreos.com/v1.
//
// Limitation (stated where it applies): the generated validators check types, required fields, enums and
// patterns (durations, label names); they do not reject unknown fields.
import { readFileSync } from "node:fs";
import * as monitoringV1 from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1";

const GROUP_VERSION = "monitoring.coreos.com/v1";

function check(object) {
  const name = object?.metadata?.name ?? "<unnamed>";
  const result = { kind: object?.kind, name, ok: false, error: null };
  const Model = object?.apiVersion === GROUP_VERSION ? monitoringV1[object.kind] : undefined;
  if (typeof Model !== "function") {
    result.error = `no ${GROUP_VERSION} model for ${object?.apiVersion} ${object?.kind}`;
    return result;
  }
  try {
    new Model(object).validate();
    result.ok = true;
  } catch (error) {
    result.error = String(error?.message ?? error);
  }
  return result;
}

const objects = JSON.parse(readFileSync(0, "utf8"));
let failures = 0;
for (const object of objects) {
  const result = check(object);
  if (!result.ok) failures += 1;
  process.stdout.write(`${JSON.stringify(result)}\n`);
}
process.exit(failures === 0 ? 0 : 1);
