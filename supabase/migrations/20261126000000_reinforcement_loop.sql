-- reinforcement-loop: prediction log, retraining runs and requests, model registry.
-- Written to be applied more than once: every statement is idempotent.

-- Why a row of the log cannot be used for training, or null when it can. Immutable so it can
-- back a stored generated column: rejects are counted by reason with a plain GROUP BY.
create or replace function public.evaluation_reject_reason(
  features jsonb, predicted_label text, actual_label text, confidence double precision
) returns text
language sql immutable parallel safe
as $$
  select case
    when predicted_label is null or btrim(predicted_label) = '' then 'label_missing'
    when actual_label is not null and btrim(actual_label) = '' then 'label_missing'
    when confidence is null or confidence = 'NaN'::float8 then 'confidence_missing'
    when confidence < 0 or confidence > 1 then 'confidence_out_of_range'
    when jsonb_typeof(features) is distinct from 'object' then 'feature_not_numeric'
    when features = '{}'::jsonb then 'features_empty'
    when exists (
      select 1 from jsonb_each(features) as f(key, value)
      where case when jsonb_typeof(f.value) = 'number' then abs(f.value::numeric) >= 1e300 else true end
    ) then 'feature_not_numeric'
  end
$$;

-- A hash of the sorted top-level keys of a feature object (null for anything else). Rows with the
-- same hash have the same keys, so a window summary checks the features of one row per key set
-- instead of every row's jsonb. Immutable so it can back a stored generated column.
create or replace function public.evaluation_feature_keys_hash(features jsonb) returns bigint
language sql immutable parallel safe
as $$
  select case when jsonb_typeof(features) = 'object'
              then hashtextextended(array(select jsonb_object_keys(features) order by 1)::text, 0) end
$$;

create table if not exists public.prediction_evaluations (
  id              bigint generated always as identity primary key,
  prediction_id   text unique,
  model_version   text,
  features        jsonb not null,
  predicted_label text not null,
  actual_label    text,
  confidence      double precision,
  predicted_at    timestamptz not null default now(),
  evaluated_at    timestamptz,
  created_at      timestamptz not null default now(),
  -- Derived columns, so every backend (SQL or PostgREST filters) can push the same filters down.
  reject_reason   text generated always as
                    (public.evaluation_reject_reason(features, predicted_label, actual_label, confidence)) stored,
  is_correct      boolean generated always as (predicted_label = actual_label) stored,
  -- A fixed pseudo-random key in [0, 2^20): reproducible uniform samples are `sample_key < k`.
  sample_key      integer generated always as (hashint8(id) & 1048575) stored,
  feature_keys_hash bigint generated always as (public.evaluation_feature_keys_hash(features)) stored
);

comment on table public.prediction_evaluations is
  'One row per prediction of the deployed classifier; actual_label and evaluated_at are filled when the outcome is known.';

-- Window summaries can be index-only scans of this index: they never read the jsonb.
create index if not exists prediction_evaluations_window_idx
  on public.prediction_evaluations (evaluated_at)
  include (is_correct, reject_reason, feature_keys_hash, id)
  where actual_label is not null;

-- Errors newest first; counting them is an index-only scan.
create index if not exists prediction_evaluations_errors_idx
  on public.prediction_evaluations (evaluated_at)
  include (confidence, feature_keys_hash, id)
  where actual_label is not null and is_correct is false and reject_reason is null;

-- Uniform samples (`sample_key < k`, in sample-key order) visit only the sampled rows, not the window.
create index if not exists prediction_evaluations_sample_idx
  on public.prediction_evaluations (sample_key, evaluated_at)
  where actual_label is not null and reject_reason is null;

create table if not exists public.model_retraining_requests (
  id                uuid primary key default gen_random_uuid(),
  requested_by      uuid,
  reason            text,
  priority          text not null default 'normal' check (priority in ('low', 'normal', 'high')),
  status            text not null default 'pending'
                      check (status in ('pending', 'processing', 'completed', 'cancelled', 'failed')),
  options           jsonb not null default '{}'::jsonb,
  processed_at      timestamptz,
  retraining_run_id uuid,
  claimed_at        timestamptz,
  error_message     text,
  created_at        timestamptz not null default now()
);

create table if not exists public.model_retraining_runs (
  id             uuid primary key default gen_random_uuid(),
  source         text not null check (source in ('auto_daily', 'manual', 'decay_triggered')),
  dataset_size   integer,
  fine_tune_flag boolean,
  status         text not null default 'pending'
                   check (status in ('pending', 'running', 'completed', 'failed', 'skipped')),
  metrics        jsonb not null default '{}'::jsonb,
  started_at     timestamptz,
  completed_at   timestamptz,
  log_url        text,
  error_message  text,
  triggered_by   uuid,
  created_at     timestamptz not null default now(),
  dagster_run_id text unique,
  model_version  text,
  request_id     uuid references public.model_retraining_requests (id)
);

create index if not exists model_retraining_runs_created_idx
  on public.model_retraining_runs (created_at desc);

do $$ begin
  alter table public.model_retraining_requests
    add constraint model_retraining_requests_run_fk
    foreign key (retraining_run_id) references public.model_retraining_runs (id);
exception when duplicate_object then null;
end $$;

create index if not exists model_retraining_requests_queue_idx
  on public.model_retraining_requests
  ((case priority when 'high' then 0 when 'normal' then 1 else 2 end), created_at)
  where status = 'pending';

create table if not exists public.model_versions (
  version            text primary key,
  artifact_path      text not null,
  sha256             text not null check (sha256 ~ '^[0-9a-f]{64}$'),
  parent_version     text references public.model_versions (version),
  training_run_id    uuid references public.model_retraining_runs (id),
  fine_tuned         boolean not null default false,
  feature_names      jsonb not null default '[]'::jsonb,
  classes            jsonb not null default '[]'::jsonb,
  metrics            jsonb not null default '{}'::jsonb,
  reference_accuracy double precision,
  is_champion        boolean not null default false,
  promoted_at        timestamptz,
  promotion_reason   text,
  created_at         timestamptz not null default now()
);

-- Exactly one champion at a time, enforced by the database.
create unique index if not exists model_versions_one_champion
  on public.model_versions ((true)) where is_champion;

-- Makes `p_version` the champion in one transaction and returns the champion afterwards.
-- With `p_check_champion`, only while the champion is still `p_expected_champion` (null: none):
-- a run never replaces a model it was not compared with; otherwise nothing changes.
create or replace function public.promote_model_version(
  p_version text, p_reason text, p_reference_accuracy double precision default null,
  p_expected_champion text default null, p_check_champion boolean default false
) returns public.model_versions
language plpgsql
as $$
declare
  current_champion text;
  promoted public.model_versions;
begin
  perform pg_advisory_xact_lock(hashtext('public.model_versions champion'));
  perform 1 from public.model_versions where version = p_version;
  if not found then
    raise exception 'unknown model version %', p_version using errcode = 'no_data_found';
  end if;
  select version into current_champion from public.model_versions where is_champion;
  if p_check_champion and current_champion is distinct from p_expected_champion then
    select * into promoted from public.model_versions where is_champion;
    return promoted;
  end if;
  update public.model_versions set is_champion = false where is_champion and version <> p_version;
  update public.model_versions
     set is_champion = true,
         promoted_at = now(),
         promotion_reason = p_reason,
         reference_accuracy = coalesce(p_reference_accuracy, reference_accuracy)
   where version = p_version
  returning * into promoted;
  return promoted;
end
$$;
