-- Written by analytics.clickhouse.schema.backfill_script(); tests/test_clickhouse_rollup.py pins it.
INSERT INTO otel.otel_traces_amm_requests
SELECT day AS Day, request AS Request, countIf(is_root) AS Roots,
  minIfOrNull(ts, is_root) AS Time, maxIf(agent, is_root) AS AgentType,
  maxIf(failed, is_root) AS Failed, maxIf(cache_hit, is_root) AS CacheHit,
  maxIf(duration, is_root) AS Duration, sumKahanStateIf(cost, is_chat) AS Cost,
  maxIf(packed_score, score IS NOT NULL) AS Scored,
  argMinStateIf(selection, ts, is_select) AS Selection,
  maxIf(in_experiment, is_select) AS InExperiment,
  maxIf(final_model, is_chat) AS FinalModel, groupArrayIf(attempt, is_chat) AS Attempts,
  groupArrayArray(failovers) AS FailoversFrom
FROM (
  SELECT toDate(Timestamp, 'UTC') AS day, Timestamp AS ts, Duration AS duration,
    SpanName LIKE 'invoke_agent %' AS is_root, SpanName = 'amm.select' AS is_select, SpanName LIKE 'chat %' AND NOT is_root AS is_chat,
    cityHash64(TraceId, if(is_root, SpanId, ParentSpanId)) AS request,
    if(is_root, coalesce(nullIf(SpanAttributes['amm.agent_type'], ''), nullIf(SpanAttributes['gen_ai.agent.name'], ''), substring(SpanName, 14)), '') AS agent, if(is_select, false, (StatusCode = 'Error' OR nullIf(SpanAttributes['error.type'], '') IS NOT NULL)) AS failed,
    if(is_root, (lower(ifNull(nullIf(SpanAttributes['amm.cache.hit'], ''), '')) IN ('true', '1', 'yes')), false) AS cache_hit,
    if(length(Events.Name) = 0, NULL, toFloat64OrNull(Events.Attributes[arrayLastIndex((n, a) -> n = 'gen_ai.evaluation.result' AND a['gen_ai.evaluation.name'] = 'overall', Events.Name, Events.Attributes)]['gen_ai.evaluation.score.value'])) AS score, bitShiftLeft(toUInt128(toUInt64(toUnixTimestamp64Nano(Timestamp))), 64) + reinterpretAsUInt64(assumeNotNull(score)) AS packed_score,
    if(is_chat, toFloat64OrZero(SpanAttributes['amm.cost_usd']), 0) AS cost,
    if(is_select, concat(SpanAttributes['amm.experiment.name'], '\0', SpanAttributes['amm.experiment.arm'], '\0', SpanAttributes['amm.selection.arm_honoured'], '\0', SpanAttributes['amm.selection.chosen']), '') AS selection,
    is_select AND SpanAttributes['amm.experiment.name'] != '' AS in_experiment,
    if(is_chat, bitShiftLeft(toUInt128(toUInt64(toUnixTimestamp64Nano(Timestamp))), 64) + cityHash64(coalesce(nullIf(SpanAttributes['gen_ai.response.model'], ''), coalesce(nullIf(SpanAttributes['gen_ai.request.model'], ''), substring(SpanName, 6)))), 0)
      AS final_model,
    CAST((if(is_chat, coalesce(nullIf(SpanAttributes['gen_ai.request.model'], ''), substring(SpanName, 6)), ''), Duration, failed, score, cost),
      'Tuple(model String, duration UInt64, failed UInt8, score Nullable(Float64), cost Float64)')
      AS attempt,
    arrayMap(a -> a['amm.failover.from'],
      arrayFilter((a, n) -> n = 'amm.failover', Events.Attributes, Events.Name))
      AS failovers
  FROM otel.otel_traces WHERE (SpanName LIKE 'invoke_agent %' OR SpanName = 'amm.select' OR SpanName LIKE 'chat %') AND (Timestamp >= toDateTime64({day:Date}, 9, 'UTC') AND Timestamp < toDateTime64({day:Date} + 1, 9, 'UTC'))
)
GROUP BY Day, Request;
