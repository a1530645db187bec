-- clear: drops a chat's turns, its context window (with its compaction) and the title its
-- first question gave it; its prompt, a title set by hand and its usage stay. Raises the chat's version and its
-- floor to it (kept in its meta, which the chat keeps), so that a turn from a read before
-- the clear is not stored after it.
--
-- KEYS: 1 turns, 2 system, 3 meta, 4 floor (a deleted chat's, read), 5 the clear's marker
-- ARGV: 1 ttl ('0': none), 2 now (Unix milliseconds), 3 the marker's ttl
-- Returns 1, or 2 for a temporary chat (which is not listed).
--
-- Safe to run twice: the marker is checked first and set last, so a run sent again after
-- a cut neither clears a turn stored since nor raises the floor over a read made since.
if redis.call('EXISTS', KEYS[5]) == 1 then return 1 end
local version, floor = found(KEYS[3], KEYS[4])
local new = next_version(version, floor)
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[3], 'bytes', 0, 'messages', 0, 'v', new, 'floor', new)
redis.call('HDEL', KEYS[3], 'window', 'compacted', 'auto_title')
stamp(KEYS[3], ARGV[2])
local ttl, temporary = chat_ttl(KEYS[3], ARGV[1])
touch(KEYS, ttl, 1, 3)
if temporary then
  redis.call('SET', KEYS[5], '1', 'EX', math.min(tonumber(ttl), tonumber(ARGV[3])))
  return 2
end
redis.call('SET', KEYS[5], '1', 'EX', ARGV[3])
return 1
