-- JSON kept as TEXT may be hand-edited into something that is not JSON; the statements that
-- look inside it (a script's cameras, the calendars its timetable names) read it through
-- this function, which gives NULL instead of failing, as SQLite's json_valid() guards them.
CREATE FUNCTION scriptd_jsonb(t TEXT) RETURNS JSONB LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
  RETURN t::jsonb;
EXCEPTION WHEN others THEN
  RETURN NULL;
END $$;
