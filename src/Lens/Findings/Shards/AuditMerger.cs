using System.Text.Json;
using DiffusionLens.Judge;
using DiffusionLens.Reports;

namespace DiffusionLens.Findings;

/// <summary>
/// <c>lens audit merge</c>: checks that shard folders belong to one audit (same claims file, options, shard count and
/// model hashes; every shard present once; every run finished) and writes the audit of all of them: audit.json,
/// report.html and the runs' folders, copied.
/// </summary>
internal static class AuditMerger
{
    public static AuditReport Merge(IReadOnlyList<string> shardDirs, string outDir)
    {
        if (shardDirs.Count == 0) throw new LensException("lens audit merge needs at least one shard folder");
        var shards = shardDirs.Select(d => (Dir: Path.GetFullPath(d), M: ShardManifest.Load(d))).ToList();
        var (dir0, m0) = shards[0];
        foreach (var (dir, m) in shards.Skip(1))
        {
            if (m.ClaimsSha256 != m0.ClaimsSha256)
                throw new LensException($"shards of different claims files: {dir} ran {m.ClaimsFile} (sha256 {m.ClaimsSha256[..12]}) but {dir0} ran {m0.ClaimsFile} (sha256 {m0.ClaimsSha256[..12]})");
            if (m.Options != m0.Options) throw new LensException($"shards with different options: {dir} has {m.Options} but {dir0} has {m0.Options}");
            if (m.Count != m0.Count) throw new LensException($"shards of different counts: {dir} is shard {m.Index}/{m.Count} but {dir0} is {m0.Index}/{m0.Count}");
            foreach (var c in m.Plan)
            {
                var c0 = m0.Plan.FirstOrDefault(x => x.Id == c.Id) ?? throw new LensException($"shards of different claims: {dir} has claim {c.Id}, {dir0} does not");
                if (c.ModelHash != c0.ModelHash)
                    throw new LensException($"shards of different models: claim {c.Id} ran {c.ModelHash ?? "nothing"} in {dir} but {c0.ModelHash ?? "nothing"} in {dir0}" +
                        ((c.Skipped ?? c0.Skipped) is { } s ? $" (skipped: {s})" : ""));
                if (!c.Runs.Select(r => r.Key).SequenceEqual(c0.Runs.Select(r => r.Key)))
                    throw new LensException($"shards with different runs for claim {c.Id}: {dir} and {dir0} (a different prompt set or judge?)");
            }
            if (m.Plan.Count != m0.Plan.Count) throw new LensException($"shards of different claims: {dir} and {dir0}");
        }
        var dup = shards.GroupBy(s => s.M.Index).FirstOrDefault(g => g.Count() > 1);
        if (dup is not null) throw new LensException($"shard {dup.Key}/{m0.Count} is given twice: {string.Join(", ", dup.Select(s => s.Dir))}");
        var missing = Enumerable.Range(0, m0.Count).Except(shards.Select(s => s.M.Index)).ToList();
        if (missing.Count > 0) throw new LensException($"shard(s) {string.Join(", ", missing.Select(i => $"{i}/{m0.Count}"))} missing: pass every shard's folder");

        var file = (JsonSerializer.Deserialize<ClaimsFile>(m0.ClaimsText, FindingsJson.Options) ?? throw new LensException($"{dir0}: empty claims text")) with { Path = m0.ClaimsFile };
        var records = new Dictionary<string, RunRecord>();
        var owner = new Dictionary<string, string>();
        foreach (var (dir, m) in shards)
        {
            var store = new RunStore(dir);
            var runs = m.Plan.SelectMany(c => c.Runs).ToDictionary(r => r.Key);
            foreach (var key in m.Runs)
            {
                var run = runs[key];
                var rec = store.TryLoad(run) ?? throw new LensException(
                    $"shard {m.Index}/{m.Count} ({dir}) has no result for claim {run.ClaimId}, prompt {run.PromptIndex}, seed {run.Seed}: run that shard again (it resumes)");
                records[key] = rec;
                owner[key] = dir;
            }
        }
        var unowned = m0.Plan.SelectMany(c => c.Runs).FirstOrDefault(r => !records.ContainsKey(r.Key));
        if (unowned is not null) throw new LensException($"no shard ran claim {unowned.ClaimId}, prompt {unowned.PromptIndex}, seed {unowned.Seed}");

        outDir = Path.GetFullPath(outDir);
        Directory.CreateDirectory(outDir);
        foreach (var (key, dir) in owner)
        {
            var rel = records[key].Result.OutDir;
            var from = Path.Combine(dir, rel);
            if (Directory.Exists(from)) CopyTree(from, Path.Combine(outDir, rel));
            new RunStore(outDir).Save(records[key], m0.Plan.SelectMany(c => c.Runs).First(r => r.Key == key));
        }
        var devices = shards.Select(s => s.M.Device).Distinct().ToList();
        var report = AuditAssembler.Report(file, m0.Plan, records, m0.Judge, string.Join(",", devices)) with { ClaimsFile = m0.ClaimsFile };
        report.Save(Path.Combine(outDir, Auditor.AuditFileName));
        HtmlReport.Write(report, outDir, Path.Combine(outDir, Auditor.ReportFileName));
        return report;
    }

    private static void CopyTree(string from, string to)
    {
        Directory.CreateDirectory(to);
        foreach (var f in Directory.GetFiles(from)) File.Copy(f, Path.Combine(to, Path.GetFileName(f)), overwrite: true);
        foreach (var d in Directory.GetDirectories(from)) CopyTree(d, Path.Combine(to, Path.GetFileName(d)));
    }
}
