-- Bring your own model: the registry records what type the model's classes are (the labels stay
-- text everywhere), and the size a warm-start update may grow to twice of. Safe to run twice.

alter table public.model_versions
  add column if not exists class_type text not null default 'str',
  add column if not exists base_size integer;

do $$
begin
  if not exists (select 1 from pg_constraint where conname = 'model_versions_class_type_check') then
    alter table public.model_versions
      add constraint model_versions_class_type_check check (class_type in ('str', 'int', 'bool', 'float'));
  end if;
  if not exists (select 1 from pg_constraint where conname = 'model_versions_base_size_check') then
    alter table public.model_versions
      add constraint model_versions_base_size_check check (base_size is null or base_size > 0);
  end if;
end
$$;

comment on column public.model_versions.classes is 'the model''s classes as text (3 -> ''3'', True -> ''True'')';
comment on column public.model_versions.class_type is 'the type of the model''s classes_: str, int, bool or float';
comment on column public.model_versions.base_size is
  'trees or boosting iterations when the model entered the registry; warm-start updates grow it to at most twice that';
