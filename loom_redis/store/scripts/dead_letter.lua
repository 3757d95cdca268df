-- Move a task to the dead-letter stream with its reason, and acknowledge it, once (a
-- task no longer pending was already moved). A dead workflow task releases the
-- workflow's task flag so that a later event (or a re-drive) can queue a new one.
-- KEYS: queue, dead, meta (the dead stream itself when the task names no workflow)
-- ARGV: task id, consumer group, reason, kind ('w' releases the flag), field, value, ...
if redis.call('XACK', KEYS[1], ARGV[2], ARGV[1]) == 0 then return 'gone' end
redis.call('XDEL', KEYS[1], ARGV[1])
local fields = {}
for i = 5, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', '100000', '*',
  'reason', ARGV[3], 'queue', KEYS[1], 'task_id', ARGV[1], unpack(fields))
if ARGV[4] == 'w' and redis.call('EXISTS', KEYS[3]) == 1 then
  redis.call('HSET', KEYS[3], 'wft', '0')
end
return 'ok'
