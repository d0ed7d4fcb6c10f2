/**
 * A small Prometheus registry: counters with labels that the node increments, and gauges read
 * from the node's state at scrape time. Text exposition format 0.0.4.
 */
type Labels = Record<string, string>;

interface Family {
  help: string;
  type: "counter" | "gauge";
  values: Map<string, { labels: Labels; value: number }>;
  collect?: () => number | { labels: Labels; value: number }[];
}

export class Metrics {
  private families = new Map<string, Family>();

  counter(name: string, help: string): void {
    this.families.set(name, { help, type: "counter", values: new Map() });
  }

  /** A gauge (or counter, with `type`) whose value is read when /metrics is scraped. */
  collect(
    name: string,
    help: string,
    fn: () => number | { labels: Labels; value: number }[],
    type: "counter" | "gauge" = "gauge",
  ): void {
    this.families.set(name, { help, type, values: new Map(), collect: fn });
  }

  inc(name: string, labels: Labels = {}, by = 1): void {
    const fam = this.families.get(name);
    if (!fam) throw new Error(`unknown metric ${name}`);
    const key = labelString(labels);
    const cur = fam.values.get(key);
    if (cur) cur.value += by;
    else fam.values.set(key, { labels, value: by });
  }

  render(): string {
    const out: string[] = [];
    for (const [name, fam] of this.families) {
      out.push(`# HELP ${name} ${fam.help}`, `# TYPE ${name} ${fam.type}`);
      if (fam.collect) {
        const v = fam.collect();
        if (typeof v === "number") out.push(`${name} ${formatValue(v)}`);
        else for (const s of v) out.push(`${name}${labelString(s.labels)} ${formatValue(s.value)}`);
      } else {
        for (const s of fam.values.values()) out.push(`${name}${labelString(s.labels)} ${formatValue(s.value)}`);
      }
    }
    return `${out.join("\n")}\n`;
  }
}

function labelString(labels: Labels): string {
  const keys = Object.keys(labels);
  if (keys.length === 0) return "";
  return `{${keys.map((k) => `${k}="${labels[k]!.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n")}"`).join(",")}}`;
}

function formatValue(v: number): string {
  if (Number.isNaN(v)) return "NaN";
  if (v === Infinity) return "+Inf";
  if (v === -Infinity) return "-Inf";
  return String(v);
}
