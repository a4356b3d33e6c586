#!/usr/bin/env bash
# Validates packaging/grafana/scriptd.json without a Grafana server (Grafana itself is in
# neither Debian's nor npm's packages): the dashboard is type-checked by the TypeScript
# compiler against the Dashboard and Panel types of @grafana/schema, the schema library
# Grafana generates from its own dashboard schema, with `satisfies`, so a misspelt or
# unknown field, a wrong type or a missing required field fails. Then every metric the
# dashboard and the alert rules query must be one the daemon exports. Needs node and npm
# (npm registry); installs into target/grafana-check.
set -euo pipefail
cd "$(dirname "$0")/../.."
dashboard=packaging/grafana/scriptd.json
work=target/grafana-check
mkdir -p "$work"
if [ ! -x "$work/node_modules/.bin/tsc" ] || [ ! -d "$work/node_modules/@grafana/schema" ]; then
  (cd "$work" && npm install --no-audit --no-fund --silent typescript@5.9 @grafana/schema@13.2.3 >/dev/null)
fi
{
  echo "import type { Dashboard, Panel, DataQuery } from '@grafana/schema';"
  echo "type Target = DataQuery & { expr: string; legendFormat?: string };"
  echo "type ScriptdPanel = Panel<object, object> & { targets: Target[] };"
  echo "type ScriptdDashboard = Omit<Dashboard, 'panels'> & { panels: ScriptdPanel[] };"
  echo "export const dashboard = ("
  cat "$dashboard"
  echo ") satisfies ScriptdDashboard;"
} >"$work/check.ts"
cat >"$work/tsconfig.json" <<'JSON'
{ "compilerOptions": { "strict": true, "noEmit": true, "target": "es2022", "module": "es2022",
  "moduleResolution": "bundler", "skipLibCheck": true, "types": [] }, "files": ["check.ts"] }
JSON
(cd "$work" && node_modules/.bin/tsc -p tsconfig.json)

# Every query names a metric the daemon exports; panel ids are unique.
known=$(grep -rhoE '"scriptd_[a-z_]+"' src | tr -d '"' | sort -u)
status=0
for file in "$dashboard" packaging/prometheus/scriptd.rules.yml; do
  for metric in $(grep -oE 'scriptd_[a-z_]+' "$file" | sed -E 's/_(bucket|sum|count)$//' | sort -u); do
    grep -qx "$metric" <<<"$known" || { echo "$file: $metric is not a metric the daemon exports" >&2; status=1; }
  done
done
dups=$(python3 -c 'import json,sys,collections; d=json.load(open(sys.argv[1])); c=collections.Counter(p["id"] for p in d["panels"]); print(" ".join(str(k) for k,v in c.items() if v>1))' "$dashboard")
[ -z "$dups" ] || { echo "$dashboard: duplicate panel ids $dups" >&2; status=1; }
[ "$status" = 0 ] && echo "dashboard $dashboard: valid against @grafana/schema 13.2.3, metrics known"
exit "$status"
