-- Move a task to the dead-letter stream with its reason, and acknowledge it, once (a
-- task no longer pending was already moved). A dead workflow task releases the
-- workflow's task flag so that a later event (or a re-drive) can queue a new one. The
-- workflow's meta names the dead entry ('dead'), so that status and inspect can say why
-- it does not move, until a re-drive or its next commit.
-- KEYS: queue, dead, meta (the dead stream itself when the task names no workflow)
-- ARGV: task id, consumer group, reason, kind ('w' releases the flag; '' when the task
--       names no workflow of this shard), the seq of an activity task (it marks the
--       workflow only if that activity is pending: an entry written by hand does not),
--       field, value, ...
expect_types({KEYS[1], 'stream', KEYS[2], 'stream'})
if KEYS[3] ~= KEYS[2] then expect_types({KEYS[3], 'hash'}) end
if redis.call('XACK', KEYS[1], ARGV[2], ARGV[1]) == 0 then return 'gone' end
redis.call('XDEL', KEYS[1], ARGV[1])
local fields = {}
for i = 6, #ARGV do fields[#fields + 1] = ARGV[i] end
local dead_id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', '100000', '*',
  'reason', ARGV[3], 'queue', KEYS[1], 'task_id', ARGV[1], unpack(fields))
if ARGV[4] == 'w' and redis.call('EXISTS', KEYS[3]) == 1 then
  redis.call('HSET', KEYS[3], 'wft', '0', 'dead', dead_id)
elseif ARGV[4] == 'a' and redis.call('HGET', KEYS[3], 'a:' .. ARGV[5]) == '1' then
  redis.call('HSET', KEYS[3], 'dead', dead_id)
end
return 'ok'
