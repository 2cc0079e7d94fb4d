-- Features of any JSON type. A row of the log is no longer judged on its own (every value a number)
-- but against the model that will read it: only its features count, each of its kind (numeric:
-- JSON number, categorical: string, boolean: boolean), a null or absent key a missing value.
--
-- What a row can be judged on without a model stays a stored column, `reject_reason` (labels,
-- confidence, a feature object). For the rest each row stores a hash of its (key, JSON type)
-- pairs, `feature_types_hash`; the hourly counts count by it, and a dictionary keeps the pairs
-- behind each hash, so a window is judged against a schema once per set of pairs, never per row.
--
-- Re-judging: the two stored columns are recomputed by one rewrite of prediction_evaluations under
-- an ACCESS EXCLUSIVE lock (readers and writers wait), then its three partial indexes are rebuilt
-- and the counts recounted. docs/deployment.md has the times measured at 1 M rows and 10 M.
-- Idempotent: the rewrite runs only while the old column is there.

-- A value's JSON type, except a number a float8 may not hold (|x| >= 1e300, or 0 < |x| < 1e-300),
-- which is 'out_of_range' (judged not numeric: loading it as float8 would fail).
create or replace function public.evaluation_json_type(value jsonb) returns text
language sql immutable parallel safe
as $$
  select case when jsonb_typeof(value) = 'number'
                   and (abs(value::numeric) >= 1e300 or (value::numeric <> 0 and abs(value::numeric) < 1e-300))
              then 'out_of_range'
              else jsonb_typeof(value) end
$$;

-- {key: JSON type} of a feature object, null for anything else: {"country": "string", "x": "number"}.
create or replace function public.evaluation_feature_types(features jsonb) returns jsonb
language sql immutable parallel safe
as $$
  select case when jsonb_typeof(features) = 'object'
              then coalesce((select jsonb_object_agg(f.key, public.evaluation_json_type(f.value))
                               from jsonb_each(features) as f(key, value)), '{}'::jsonb) end
$$;

-- A hash of those pairs (jsonb prints an object's keys in one fixed order).
create or replace function public.evaluation_feature_types_hash(features jsonb) returns bigint
language sql immutable parallel safe
as $$
  select hashtextextended(public.evaluation_feature_types(features)::text, 0)
$$;

-- Whether text parses as a JSON object: features written as a JSON string holding one.
create or replace function public.evaluation_text_is_json_object(value text) returns boolean
language plpgsql immutable parallel safe
as $$
begin
  return jsonb_typeof(value::jsonb) = 'object';
exception when others then
  return false;
end
$$;

-- Why a row cannot be used whatever the model, or null. The store parses features sent as JSON
-- text on insert; text written by SQL directly is set aside as 'features_json_text'.
create or replace function public.evaluation_row_reject_reason(
  features jsonb, predicted_label text, actual_label text, confidence double precision
) returns text
language sql immutable parallel safe
as $$
  select case
    when predicted_label is null or btrim(predicted_label) = '' then 'label_missing'
    when actual_label is not null and btrim(actual_label) = '' then 'label_missing'
    when confidence is null or confidence in ('NaN'::float8, 'Infinity'::float8, '-Infinity'::float8)
      then 'confidence_missing'
    when confidence < 0 or confidence > 1 then 'confidence_out_of_range'
    when jsonb_typeof(features) = 'object' then case when features = '{}'::jsonb then 'features_empty' end
    when jsonb_typeof(features) = 'null' then 'features_empty'  -- as the store writes a missing object: {}
    when jsonb_typeof(features) = 'string' and public.evaluation_text_is_json_object(features #>> '{}')
      then 'features_json_text'
    else 'features_not_object'
  end
$$;

-- The rewrite: both stored columns in one pass. Dropping `reject_reason` drops the indexes on it,
-- rebuilt below.
do $$
begin
  if exists (select from information_schema.columns
              where table_schema = 'public' and table_name = 'prediction_evaluations'
                and column_name = 'feature_keys_hash') then
    alter table public.prediction_evaluations
      drop column reject_reason,
      drop column feature_keys_hash,
      add column reject_reason text generated always as
        (public.evaluation_row_reject_reason(features, predicted_label, actual_label, confidence)) stored,
      add column feature_types_hash bigint generated always as
        (public.evaluation_feature_types_hash(features)) stored;
  end if;
end
$$;

drop function if exists public.evaluation_reject_reason(jsonb, text, text, double precision);
drop function if exists public.evaluation_feature_keys_hash(jsonb);

create index if not exists prediction_evaluations_window_idx
  on public.prediction_evaluations (evaluated_at)
  include (is_correct, reject_reason, feature_types_hash, model_version, id)
  where actual_label is not null;

create index if not exists prediction_evaluations_errors_idx
  on public.prediction_evaluations (evaluated_at)
  include (confidence, feature_types_hash, id)
  where actual_label is not null and is_correct is false and reject_reason is null;

create index if not exists prediction_evaluations_sample_idx
  on public.prediction_evaluations (sample_key, evaluated_at)
  where actual_label is not null and reject_reason is null;

-- The counts, by type set instead of key set.
do $$
begin
  if exists (select from information_schema.columns
              where table_schema = 'public' and table_name = 'prediction_evaluation_counts'
                and column_name = 'feature_keys_hash') then
    alter table public.prediction_evaluation_counts rename column feature_keys_hash to feature_types_hash;
  end if;
end
$$;

comment on table public.prediction_evaluation_counts is
  'Evaluated rows of prediction_evaluations per UTC hour, model version, reject reason and feature type set; '
  'kept by triggers (rows of a key add up).';

drop table if exists public.prediction_feature_key_sets;

create table if not exists public.prediction_feature_type_sets (
  feature_types_hash bigint primary key,
  feature_types      jsonb not null
);

comment on table public.prediction_feature_type_sets is
  'The {key: JSON type} pairs behind each feature_types_hash of prediction_evaluations; kept by triggers.';

create or replace function public.count_prediction_evaluations() returns trigger
language plpgsql security definer set search_path = ''
as $$
declare
  changes public.prediction_evaluation_counts[] := '{}';
begin
  if tg_op <> 'DELETE' then
    insert into public.prediction_feature_type_sets (feature_types_hash, feature_types)
    select distinct on (n.feature_types_hash) n.feature_types_hash, public.evaluation_feature_types(n.features)
      from new_rows n
     where n.feature_types_hash is not null
       and not exists (select from public.prediction_feature_type_sets k
                        where k.feature_types_hash = n.feature_types_hash)
     order by n.feature_types_hash
    on conflict do nothing;
    changes := array(
      select row(public.evaluation_hour(n.evaluated_at), n.model_version, n.reject_reason, n.feature_types_hash,
                 count(*), count(*) filter (where n.is_correct), false)::public.prediction_evaluation_counts
        from new_rows n
       where n.actual_label is not null and n.evaluated_at is not null
       group by public.evaluation_hour(n.evaluated_at), n.model_version, n.reject_reason, n.feature_types_hash);
  end if;
  if tg_op <> 'INSERT' then
    changes := changes || array(
      select row(public.evaluation_hour(o.evaluated_at), o.model_version, o.reject_reason, o.feature_types_hash,
                 -count(*), -count(*) filter (where o.is_correct), false)::public.prediction_evaluation_counts
        from old_rows o
       where o.actual_label is not null and o.evaluated_at is not null
       group by public.evaluation_hour(o.evaluated_at), o.model_version, o.reject_reason, o.feature_types_hash);
  end if;
  insert into public.prediction_evaluation_counts
         (hour, model_version, reject_reason, feature_types_hash, row_count, correct_count)
  select d.hour, d.model_version, d.reject_reason, d.feature_types_hash, sum(d.row_count), sum(d.correct_count)
    from unnest(changes) d
   group by 1, 2, 3, 4
  having sum(d.row_count) <> 0 or sum(d.correct_count) <> 0;
  return null;
end
$$;

create or replace function public.compact_evaluation_counts() returns integer
language plpgsql volatile security definer set search_path = ''
as $$
declare
  folded integer;
begin
  if current_setting('transaction_read_only')::boolean
     or current_setting('transaction_isolation') <> 'read committed'
     or not pg_try_advisory_xact_lock(hashtext('public.prediction_evaluation_counts compaction')) then
    return 0;
  end if;
  with hours as (
    select distinct hour from public.prediction_evaluation_counts where not compacted
  ), taken as (
    delete from public.prediction_evaluation_counts c using hours h where c.hour = h.hour returning c.*
  ), kept as (
    insert into public.prediction_evaluation_counts
           (hour, model_version, reject_reason, feature_types_hash, row_count, correct_count, compacted)
    select hour, model_version, reject_reason, feature_types_hash, sum(row_count), sum(correct_count), true
      from taken
     group by 1, 2, 3, 4
    having sum(row_count) <> 0 or sum(correct_count) <> 0
  )
  select count(*) into folded from hours;
  return folded;
end
$$;

create or replace function public.rebuild_evaluation_counts() returns void
language plpgsql volatile security definer set search_path = ''
as $$
begin
  lock table public.prediction_evaluations in share mode;
  delete from public.prediction_evaluation_counts;
  insert into public.prediction_evaluation_counts
         (hour, model_version, reject_reason, feature_types_hash, row_count, correct_count, compacted)
  select public.evaluation_hour(evaluated_at), model_version, reject_reason, feature_types_hash,
         count(*), count(*) filter (where is_correct), true
    from public.prediction_evaluations
   where actual_label is not null and evaluated_at is not null
   group by 1, 2, 3, 4;
  -- The pairs of one row per type set, not of every row.
  insert into public.prediction_feature_type_sets (feature_types_hash, feature_types)
  select example.feature_types_hash, public.evaluation_feature_types(e.features)
    from (select feature_types_hash, min(id) as id from public.prediction_evaluations
           where feature_types_hash is not null group by 1) example
    join public.prediction_evaluations e on e.id = example.id
  on conflict do nothing;
end
$$;

select public.rebuild_evaluation_counts();

drop function if exists public.evaluation_window_counts(timestamptz, timestamptz);

-- As in 20261126120000_evaluation_counts.sql, per feature type set.
create function public.evaluation_window_counts(p_start timestamptz, p_end timestamptz)
returns table (model_version text, reject_reason text, feature_types_hash bigint, row_count bigint,
               correct_count bigint)
language plpgsql stable
as $$
declare
  first_hour timestamptz := least(public.evaluation_hour(p_start - interval '1 microsecond') + interval '1 hour', p_end);
  end_hour timestamptz := greatest(public.evaluation_hour(p_end), first_hour);
begin
  if p_start is null or p_end is null then
    return;
  end if;
  return query
  select parts.model_version, parts.reject_reason, parts.feature_types_hash, sum(parts.row_count)::bigint,
         sum(parts.correct_count)::bigint
    from (select c.model_version, c.reject_reason, c.feature_types_hash, c.row_count, c.correct_count
            from public.prediction_evaluation_counts c
           where c.hour >= first_hour and c.hour < end_hour
          union all
          select e.model_version, e.reject_reason, e.feature_types_hash, 1, e.is_correct::int
            from public.prediction_evaluations e
           where e.actual_label is not null and e.evaluated_at >= p_start and e.evaluated_at < first_hour
          union all
          select e.model_version, e.reject_reason, e.feature_types_hash, 1, e.is_correct::int
            from public.prediction_evaluations e
           where e.actual_label is not null and e.evaluated_at >= end_hour and e.evaluated_at < p_end) parts
   group by 1, 2, 3;
end
$$;

-- Why rows whose features have the {key: JSON type} pairs p_types cannot be fed to a model of
-- feature schema p_schema ([{"name": ..., "kind": ...}, ...]): one row (reason, feature) for the
-- first failing feature in schema order, no row when they can. A key not logged is a missing value,
-- as a null is. Mirrored by reinforcement_assets/core/features.py:judge_types.
create or replace function public.judge_feature_types(p_types jsonb, p_schema jsonb, p_accepts_missing boolean)
returns table (reason text, feature text)
language sql immutable parallel safe
as $$
  select v.reason, v.name
    from jsonb_array_elements(coalesce(p_schema, '[]'::jsonb)) with ordinality as f(spec, position)
    cross join lateral (select f.spec ->> 'name' as name, f.spec ->> 'kind' as kind,
                               p_types ->> (f.spec ->> 'name') as found) s
    cross join lateral (select s.name, case
        when coalesce(s.found, 'null') = 'null' and not coalesce(p_accepts_missing, false) then 'feature_missing'
        when coalesce(s.found, 'null') = 'null' then null
        when s.kind = 'numeric' and s.found <> 'number' then 'feature_not_numeric'
        when s.kind = 'categorical' and s.found <> 'string' then 'feature_not_categorical'
        when s.kind = 'boolean' and s.found <> 'boolean' then 'feature_not_boolean'
      end as reason) v
   where v.reason is not null
   order by f.position
   limit 1
$$;

drop function if exists public.summarize_evaluation_window(timestamptz, timestamptz, timestamptz, text[]);

-- Counts over the evaluated rows of [p_start, p_end) by why a row is set aside (null: usable) and
-- on which feature, judged against p_schema; train part [p_start, p_holdout_start) apart.
create or replace function public.summarize_evaluation_window(
  p_start timestamptz, p_end timestamptz, p_holdout_start timestamptz, p_schema jsonb, p_accepts_missing boolean
) returns table (reason text, feature text, row_count bigint, correct bigint, train_rows bigint,
                 train_correct bigint)
language plpgsql volatile
as $$
declare
  split_at timestamptz := greatest(p_start, least(coalesce(p_holdout_start, p_start), p_end));
begin
  if p_start is null or p_end is null then
    return;
  end if;
  perform public.compact_evaluation_counts();
  return query
  with counts as (
    select w.*, true as train from public.evaluation_window_counts(p_start, split_at) w
    union all
    select w.*, false from public.evaluation_window_counts(split_at, p_end) w
  ), type_sets as (
    select c.reject_reason, c.feature_types_hash, sum(c.row_count) as n, sum(c.correct_count) as right_n,
           coalesce(sum(c.row_count) filter (where c.train), 0) as train_n,
           coalesce(sum(c.correct_count) filter (where c.train), 0) as train_right_n
      from counts c
     group by 1, 2
  )
  select coalesce(t.reject_reason, j.reason), case when t.reject_reason is null then j.feature end,
         sum(t.n)::bigint, sum(t.right_n)::bigint, sum(t.train_n)::bigint, sum(t.train_right_n)::bigint
    from type_sets t
    left join public.prediction_feature_type_sets s on s.feature_types_hash = t.feature_types_hash
    left join lateral public.judge_feature_types(coalesce(s.feature_types, '{}'::jsonb), p_schema,
                                                 p_accepts_missing) j on t.reject_reason is null
   group by 1, 2
  having sum(t.n) > 0;
end
$$;

drop function if exists public.evaluation_feature_key_sets(timestamptz, timestamptz, integer);

-- The feature type sets of the usable rows of [p_start, p_end), most rows first, with how many
-- rows have each: what a schema is inferred from. Read from the counts.
create or replace function public.evaluation_feature_type_sets(
  p_start timestamptz, p_end timestamptz, p_limit integer default 1000
) returns table (feature_types jsonb, row_count bigint)
language sql stable
as $$
  select s.feature_types, sum(w.row_count)::bigint
    from public.evaluation_window_counts(p_start, p_end) w
    join public.prediction_feature_type_sets s on s.feature_types_hash = w.feature_types_hash
   where w.reject_reason is null
   group by s.feature_types_hash
  having sum(w.row_count) > 0
   order by 2 desc, s.feature_types_hash
   limit p_limit
$$;

-- The feature type sets of [p_start, p_end) whose rows p_schema accepts: loading rows filters on
-- `feature_types_hash` being one of them.
create or replace function public.evaluation_accepted_type_sets(
  p_start timestamptz, p_end timestamptz, p_schema jsonb, p_accepts_missing boolean
) returns table (feature_types_hash bigint)
language sql stable
as $$
  select s.feature_types_hash
    from public.prediction_feature_type_sets s
   where s.feature_types_hash in (select w.feature_types_hash from public.evaluation_window_counts(p_start, p_end) w
                                   where w.reject_reason is null and w.row_count > 0)
     and not exists (select from public.judge_feature_types(s.feature_types, p_schema, p_accepts_missing))
$$;

-- The registry records each model's feature schema: [{"name": ..., "kind": ...}] in input order (a
-- kind null until inferred from the log), and whether it accepts missing values (null: not probed
-- yet). Models registered before took numbers only.
alter table public.model_versions add column if not exists feature_schema jsonb;
alter table public.model_versions add column if not exists accepts_missing boolean;

update public.model_versions v
   set feature_schema = (select coalesce(jsonb_agg(jsonb_build_object('name', n.name, 'kind', 'numeric')
                                                   order by n.position), '[]'::jsonb)
                           from jsonb_array_elements_text(v.feature_names) with ordinality as n(name, position))
 where v.feature_schema is null;

-- Sets a version's schema once it is known (a registered model's kinds from the log).
create or replace function public.record_feature_schema(
  p_version text, p_feature_schema jsonb, p_accepts_missing boolean
) returns integer
language sql volatile
as $$
  with updated as (
    update public.model_versions set feature_schema = p_feature_schema, accepts_missing = p_accepts_missing
     where version = p_version
    returning 1
  )
  select count(*)::integer from updated
$$;

alter table public.prediction_feature_type_sets enable row level security;
revoke all on public.prediction_feature_type_sets from public, anon, authenticated, service_role;
grant select on public.prediction_feature_type_sets to service_role;
revoke execute on function public.evaluation_json_type(jsonb), public.evaluation_feature_types(jsonb),
  public.evaluation_feature_types_hash(jsonb), public.evaluation_text_is_json_object(text),
  public.evaluation_row_reject_reason(jsonb, text, text, double precision),
  public.evaluation_window_counts(timestamptz, timestamptz),
  public.judge_feature_types(jsonb, jsonb, boolean),
  public.summarize_evaluation_window(timestamptz, timestamptz, timestamptz, jsonb, boolean),
  public.evaluation_feature_type_sets(timestamptz, timestamptz, integer),
  public.evaluation_accepted_type_sets(timestamptz, timestamptz, jsonb, boolean),
  public.record_feature_schema(text, jsonb, boolean)
  from public, anon, authenticated;
grant execute on function public.evaluation_window_counts(timestamptz, timestamptz),
  public.judge_feature_types(jsonb, jsonb, boolean),
  public.summarize_evaluation_window(timestamptz, timestamptz, timestamptz, jsonb, boolean),
  public.evaluation_feature_type_sets(timestamptz, timestamptz, integer),
  public.evaluation_accepted_type_sets(timestamptz, timestamptz, jsonb, boolean),
  public.record_feature_schema(text, jsonb, boolean)
  to service_role;
