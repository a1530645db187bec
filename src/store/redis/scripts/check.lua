-- check: the write model's check (`store/mod.rs` states the model, `store/write.rs`
-- decides it: `Expect::check`), made inside each script that changes a chat's turns, before
-- it writes anything. Prepended to those scripts (after touch).
--
-- found: the chat as the write finds it: its version (meta's `v`; 0 for a chat that never
-- was) and its floor (the version a clear or a deletion raised it to; 0 for none): a clear
-- keeps it in the chat's meta, a deletion in the floor key (its tombstone), which is read
-- only when the chat has no meta.
-- refused: nil when a write of `kind` from a read that saw version `seen` may go on; else
-- 'gone' (the chat was cleared or deleted since that read) or 'moved' (it changed in a way
-- the write cannot follow). Kinds: '' nothing to check (a chat the write makes), 'since'
-- (not cleared or deleted since), 'follows' (and its newest turn is still `newest`),
-- 'exactly' (not changed at all since).
-- next_version: the version a write leaves: above the chat's and above its floor.
-- found_in: found() from meta's `v` and `floor` already read (a script that reads meta).
local function found_in(v, floor, floor_key)
  local version = tonumber(v)
  if version then return version, tonumber(floor) or 0 end
  return 0, tonumber(redis.call('GET', floor_key)) or 0
end
local function found(meta, floor_key)
  local fields = redis.call('HMGET', meta, 'v', 'floor')
  return found_in(fields[1], fields[2], floor_key)
end
local function refused(kind, seen, newest, version, floor, turns)
  if kind == '' then return nil end
  seen = tonumber(seen)
  if seen < floor then return 'gone' end
  if kind == 'exactly' and math.max(version, floor) ~= seen then return 'moved' end
  if kind == 'follows' then
    local last = redis.call('LINDEX', turns, -1)
    local head = '{"id":"' .. newest .. '"'
    if not last or string.sub(last, 1, #head) ~= head then return 'moved' end
  end
  return nil
end
local function next_version(version, floor)
  return string.format('%d', math.max(version, floor) + 1)
end
