-- Written by analytics.clickhouse.schema.init_script(); tests/test_clickhouse_rollup.py pins it.
CREATE DATABASE IF NOT EXISTS otel;

CREATE TABLE IF NOT EXISTS otel.otel_traces (
    Timestamp DateTime64(9) CODEC(Delta, ZSTD(1)),
    TraceId String CODEC(ZSTD(1)),
    SpanId String CODEC(ZSTD(1)),
    ParentSpanId String CODEC(ZSTD(1)),
    TraceState String CODEC(ZSTD(1)),
    SpanName LowCardinality(String) CODEC(ZSTD(1)),
    SpanKind LowCardinality(String) CODEC(ZSTD(1)),
    ServiceName LowCardinality(String) CODEC(ZSTD(1)),
    ResourceAttributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    ScopeName String CODEC(ZSTD(1)),
    ScopeVersion String CODEC(ZSTD(1)),
    SpanAttributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    Duration UInt64 CODEC(ZSTD(1)),
    StatusCode LowCardinality(String) CODEC(ZSTD(1)),
    StatusMessage String CODEC(ZSTD(1)),
    Events Nested (
        Timestamp DateTime64(9),
        Name LowCardinality(String),
        Attributes Map(LowCardinality(String), String)
    ) CODEC(ZSTD(1)),
    Links Nested (
        TraceId String,
        SpanId String,
        TraceState String,
        Attributes Map(LowCardinality(String), String)
    ) CODEC(ZSTD(1)),
    INDEX idx_trace_id TraceId TYPE bloom_filter(0.001) GRANULARITY 1,
    INDEX idx_res_attr_key mapKeys(ResourceAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_res_attr_value mapValues(ResourceAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_span_attr_key mapKeys(SpanAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_span_attr_value mapValues(SpanAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_duration Duration TYPE minmax GRANULARITY 1
) ENGINE = MergeTree
PARTITION BY toDate(Timestamp)
ORDER BY (ServiceName, SpanName, toDateTime(Timestamp))
TTL toDateTime(Timestamp) + toIntervalDay(30)
SETTINGS index_granularity = 8192, ttl_only_drop_parts = 1;

CREATE TABLE IF NOT EXISTS otel.otel_traces_amm_requests (
    Day Date CODEC(Delta, ZSTD(1)),
    Request UInt64 CODEC(ZSTD(1)),
    Roots SimpleAggregateFunction(sum, UInt64) CODEC(ZSTD(1)),
    Time SimpleAggregateFunction(min, Nullable(DateTime64(9))) CODEC(ZSTD(1)),
    AgentType SimpleAggregateFunction(max, String) CODEC(ZSTD(1)),
    Failed SimpleAggregateFunction(max, UInt8) CODEC(ZSTD(1)),
    CacheHit SimpleAggregateFunction(max, UInt8) CODEC(ZSTD(1)),
    Duration SimpleAggregateFunction(max, UInt64) CODEC(ZSTD(1)),
    Cost AggregateFunction(sumKahan, Float64) CODEC(ZSTD(1)),
    Scored SimpleAggregateFunction(max, UInt128) CODEC(ZSTD(1)),
    Selection AggregateFunction(argMin, String, DateTime64(9)) CODEC(ZSTD(1)),
    InExperiment SimpleAggregateFunction(max, UInt8) CODEC(ZSTD(1)),
    FinalModel SimpleAggregateFunction(max, UInt128) CODEC(ZSTD(1)),
    Attempts SimpleAggregateFunction(groupArrayArray, Array(Tuple(
        model String, duration UInt64, failed UInt8, score Nullable(Float64), cost Float64)))
        CODEC(ZSTD(1)),
    FailoversFrom SimpleAggregateFunction(groupArrayArray, Array(String)) CODEC(ZSTD(1))
) ENGINE = AggregatingMergeTree
PARTITION BY Day
ORDER BY Request
TTL Day + toIntervalDay(32);

CREATE MATERIALIZED VIEW IF NOT EXISTS otel.otel_traces_amm_requests_mv TO otel.otel_traces_amm_requests
AS SELECT day AS Day, request AS Request, countIf(is_root) AS Roots,
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
  FROM otel.otel_traces WHERE (SpanName LIKE 'invoke_agent %' OR SpanName = 'amm.select' OR SpanName LIKE 'chat %') AND (1)
)
GROUP BY Day, Request;
