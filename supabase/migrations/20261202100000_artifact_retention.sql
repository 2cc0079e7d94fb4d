-- Storage stays bounded: the registry records when a version's file was deleted (its row stays), and a
-- version without a file can never become champion again. Safe to run twice.

alter table public.model_versions add column if not exists artifact_pruned_at timestamptz;

comment on column public.model_versions.artifact_pruned_at is
  'when the model''s file was deleted from artifact storage (reinforcement prune); null while it is kept';

-- Marks the files of `p_versions` pruned, except the champion's, and returns every one of them that is
-- marked (now or before), so a repeated call answers the same. It takes the lock promotion takes:
-- a version is either promoted first (then it is not marked) or marked first (then it is not promoted),
-- and only a marked version's file is deleted.
create or replace function public.mark_model_artifacts_pruned(p_versions text[])
returns setof public.model_versions
language plpgsql
as $$
begin
  perform pg_advisory_xact_lock(hashtext('public.model_versions champion'));
  update public.model_versions
     set artifact_pruned_at = now()
   where version = any(p_versions) and not is_champion and artifact_pruned_at is null;
  return query
    select * from public.model_versions
     where version = any(p_versions) and artifact_pruned_at is not null
     order by version;
end
$$;

-- As in 20261126000000_reinforcement_loop.sql, and a version whose file was pruned is refused.
create or replace function public.promote_model_version(
  p_version text, p_reason text, p_reference_accuracy double precision default null,
  p_expected_champion text default null, p_check_champion boolean default false
) returns public.model_versions
language plpgsql
as $$
declare
  current_champion text;
  pruned_at timestamptz;
  promoted public.model_versions;
begin
  perform pg_advisory_xact_lock(hashtext('public.model_versions champion'));
  select v.artifact_pruned_at into pruned_at from public.model_versions v where v.version = p_version;
  if not found then
    raise exception 'unknown model version %', p_version using errcode = 'no_data_found';
  end if;
  if pruned_at is not null then
    raise exception 'model version %''s file was pruned on % UTC; it cannot be restored',
      p_version, to_char(pruned_at at time zone 'UTC', 'YYYY-MM-DD HH24:MI')
      using errcode = 'object_not_in_prerequisite_state';
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

revoke execute on function public.mark_model_artifacts_pruned(text[]) from public, anon, authenticated;
grant execute on function public.mark_model_artifacts_pruned(text[]) to service_role;
